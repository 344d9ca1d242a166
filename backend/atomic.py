"""Writing a folder or a file so that no reader ever sees half of it.

Every folder TuneLab publishes (an adapter, an import, a converted base) is written
into a dot-prefixed temporary folder beside its final place, then swapped in with
renames: a crash leaves either the old folder or the new one, never a mix. A file that
is rewritten in place (an adapter's ``tunelab.json``) goes through a temporary file
beside it and one rename, the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def swap_in(tmp: Path, final: Path) -> Path:
    """Put the finished folder ``tmp`` at ``final``, replacing what was there."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        final.rename(old / final.name)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write into; swapped in when the block ends
    without an error, removed when it raises."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_file(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
