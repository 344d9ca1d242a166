"""The sample datasets shipped inside the package (``backend/data/sample_datasets/``).

They travel as package data, so an installed TuneLab (a wheel, the Docker image) finds
them beside this module just as a checkout does: the page's sample list and
``tunelab data check`` read them from here, never from the working folder.
"""

from __future__ import annotations

from pathlib import Path

from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from backend.errors import DataError

SAMPLES_DIR = Path(__file__).resolve().parent / "sample_datasets"
_READABLE = JSON_SUFFIXES | CSV_SUFFIXES | TEXT_SUFFIXES


def sample_files() -> list[Path]:
    """Every shipped sample the data doctor reads, sorted by name."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in _READABLE)


def sample_file(name: str) -> Path:
    """The shipped sample called ``name`` (a file name from :func:`sample_files`)."""
    by_name = {p.name: p for p in sample_files()}
    if name not in by_name:
        raise DataError(f"There is no sample dataset named {name!r}.",
                        fix=f"Pick one of: {', '.join(by_name) or 'none (the package ships no samples)'}.")
    return by_name[name]
