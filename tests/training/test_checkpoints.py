"""Where a run's checkpoints live and which one a resumed run starts from (backend/training/checkpoints.py)."""

from __future__ import annotations

import json

from backend.training.checkpoints import checkpoint_step, checkpoints_dir, drop_checkpoints, last_checkpoint


def _checkpoint(work, step: int, complete: bool = True):
    folder = checkpoints_dir(work) / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_resumed_run_starts_from_the_newest_complete_checkpoint(tmp_path):
    assert last_checkpoint(tmp_path) is None and checkpoint_step(None) == 0
    _checkpoint(tmp_path, 2)
    ten = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 12, complete=False)  # killed mid-save
    (checkpoints_dir(tmp_path) / "checkpoint-tmp").mkdir()
    assert last_checkpoint(tmp_path) == ten and checkpoint_step(ten) == 10
    assert checkpoint_step(checkpoints_dir(tmp_path) / "checkpoint-12") == 12  # from the name


def test_dropping_checkpoints_keeps_the_logs(tmp_path):
    _checkpoint(tmp_path, 4)
    (tmp_path / "stderr.log").write_text("log")
    drop_checkpoints(tmp_path)
    drop_checkpoints(tmp_path)  # nothing left to drop is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stderr.log"]
