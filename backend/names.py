"""Adapter names and the folders they map to.

A name matches ``^[a-z0-9][a-z0-9._-]{0,63}$``; the resolved folder must stay inside
``adapters/`` (no ``..``, no symlink escape). This is the only place that turns a
name into a path. :func:`inside_roots` holds a given adapter path (the endpoint's
``lora_path``) to the same rule: inside ``adapters/`` or another allowed folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.errors import AdapterMismatch, InvalidName

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
NAME_RULE = (
    "Use 1-64 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit (e.g. 'autumn-r8')."
)
_NAME_RE = re.compile(NAME_PATTERN)


def validate_name(name: str) -> str:
    # fullmatch: the pattern's ``$`` alone would let a trailing newline through ("nl\n")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in {".", ".."}:
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


def inside_roots(given: str | Path, roots: list[Path]) -> Path:
    """``given`` resolved (symlinks followed, ``..`` collapsed), if it lies inside one of
    ``roots``; :class:`AdapterMismatch` otherwise. The refusal echoes what was given and
    nothing about the disk (not the resolved target, not whether it exists)."""
    path = Path(given).expanduser().resolve()
    if not lies_inside(path, roots):
        raise AdapterMismatch(
            f"lora_path {str(given)!r} is outside the folders this server loads adapters from.",
            fix="Put the adapter in the adapters folder of the server's home (adapters/<name>/), or start "
            "the server with its folder listed in TUNELAB_ADAPTER_ROOTS.")
    return path


def lies_inside(path: str | Path, roots: list[Path]) -> bool:
    """Whether ``path``, resolved (``~`` expanded, symlinks followed, ``..`` collapsed), is one
    of ``roots`` or lies inside one (each resolved too): the one containment check of the
    endpoint's adapter paths and of what the page reads and writes (Settings)."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in roots)


def slugify(text: str, fallback: str = "adapter") -> str:
    """A valid adapter name derived from free text ("Autumn mood!" -> "autumn-mood")."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    slug = re.sub(r"-{2,}", "-", slug)[:48].strip("-._")
    return slug or fallback
