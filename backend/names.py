"""Adapter names and the folders they map to.

A name matches ``^[a-z0-9][a-z0-9._-]{0,63}$``; the resolved folder must stay inside
``adapters/`` (no ``..``, no symlink escape). This is the only place that turns a
name into a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.errors import InvalidName

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
NAME_RULE = (
    "Use 1-64 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit (e.g. 'autumn-r8')."
)
_NAME_RE = re.compile(NAME_PATTERN)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."}:
        raise InvalidName(f"Invalid adapter name {name!r}.", fix=NAME_RULE)
    if ".." in name:
        raise InvalidName(f"Invalid adapter name {name!r}: it may not contain '..'.", fix=NAME_RULE)
    return name


def adapter_path(adapters_root: Path, name: str) -> Path:
    """Folder of adapter ``name``; raises :class:`InvalidName` if it escapes the root."""
    validate_name(name)
    root = adapters_root.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise InvalidName(
            f"Adapter name {name!r} resolves to {path}, outside {root}.", fix=NAME_RULE
        )
    return path


def slugify(text: str, fallback: str = "adapter") -> str:
    """A valid adapter name derived from free text ("Autumn mood!" -> "autumn-mood")."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    slug = re.sub(r"-{2,}", "-", slug)[:48].strip("-._")
    return slug or fallback
