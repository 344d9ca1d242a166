"""Where a run's checkpoints live, which one a resumed run starts from, and dropping them.

A job's working folder (``settings.paths.run_dir(job_id)``) holds the trainer's
checkpoints in ``checkpoints/checkpoint-<step>/``. A paused or crashed run resumes from
the newest complete one; a cancelled run never resumes, so its checkpoints are freed
(its logs stay). No torch here: the job runner and the worker's start read these.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECKPOINTS = "checkpoints"


def checkpoints_dir(work_dir: Path) -> Path:
    return Path(work_dir) / CHECKPOINTS


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.json was written, which
    the Trainer does last), so a run killed mid-save resumes from the one before."""
    folder = checkpoints_dir(work_dir)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)


def checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a checkpoint was saved at (0 for none)."""
    if checkpoint is None:
        return 0
    state = checkpoint / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    return int(checkpoint.name.rsplit("-", 1)[-1])


def drop_checkpoints(work_dir: Path) -> None:
    """A cancelled run never resumes: free its checkpoints, keep its logs."""
    shutil.rmtree(checkpoints_dir(work_dir), ignore_errors=True)
