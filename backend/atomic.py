"""Writing a folder so that no reader ever sees half of it.

Every folder TuneLab publishes (an adapter, an import, a converted base) is written
into a dot-prefixed temporary folder beside its final place, then swapped in with
renames: a crash leaves either the old folder or the new one, never a mix.
"""

from __future__ import annotations

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
