"""`--processes 2`: one job, two DDP ranks under accelerate launch (gloo on this CPU), run by
the real job runner on the tiny Llama. Progress and the adapter come from rank 0 only; a
pause and a resume restart both ranks from the checkpoint; a cancel leaves no process behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend.adapter_folder import read_meta
from backend.training.jobs import JobRunner
from tests.builders import tiny_spec, write_color_data


def wait_for(predicate, timeout: float = 180.0, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def processes_of_home(home: Path) -> list[int]:
    """Live processes started for this home (the worker environment names it)."""
    import os

    needle = b"\0TUNELAB_HOME=" + str(home).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in b"\0" + (entry / "environ").read_bytes() and \
                        (entry / "stat").read_text().split(") ", 1)[-1][:1] != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture()
def runner(settings):
    runner = JobRunner(settings, poll_s=0.2, grace_s=60)
    yield runner
    runner.close()


def test_two_processes_pause_resume_and_finish_one_adapter(runner, settings, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("two", tiny_llama, epochs=2, batch_size=4, processes=2, save_steps=1,
                                     early_stopping=False), data)
    runner.start()
    wait_for(lambda: (runner.store.get_job(job_id).step or 0) >= 2)
    assert len(processes_of_home(settings.home)) >= 3  # the launcher and two ranks
    runner.stop()  # the app shuts down: both ranks stop at one step, a checkpoint is kept
    job = runner.store.get_job(job_id)
    assert job.status == "queued" and processes_of_home(settings.home) == []
    paused_at = job.step
    restarted = JobRunner(settings, poll_s=0.2)  # the app starts again: the resume starts both ranks again
    try:
        assert restarted.run_pending() == [job_id]
    finally:
        restarted.close()
    job = runner.store.get_job(job_id)
    assert job.status == "done", job.error
    meta = read_meta(settings.paths.adapters / "two")
    metrics = meta["metrics"]
    assert metrics["processes"] == 2 and metrics["recipe"]["per_device_batch"] == 2
    assert metrics["resumed_from_step"] >= paused_at > 0
    # 12 training rows, 4 per optimizer step split over 2 ranks: 3 steps an epoch, not 6
    assert metrics["examples"] == 12 and metrics["steps"] == 2 * 3
    starts = [e for e in runner.events(job_id) if e["kind"] == "start"]
    assert len(starts) == 2  # one start per attempt, from rank 0 only
    progress_steps = [e["step"] for e in runner.events(job_id) if e["kind"] == "progress" and e["loss"] is not None]
    assert len(progress_steps) == len(set(progress_steps))  # each step reported once
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), settings.paths.adapters / "two")
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())  # it trained
    assert processes_of_home(settings.home) == []


def test_a_cancel_stops_every_rank(runner, settings, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("long", tiny_llama, epochs=100, processes=2), data)
    runner.start()
    wait_for(lambda: (runner.store.get_job(job_id).step or 0) >= 1)
    assert len(processes_of_home(settings.home)) >= 3
    runner.cancel(job_id)
    assert runner.wait(job_id, timeout=90) == "cancelled"
    wait_for(lambda: processes_of_home(settings.home) == [], timeout=30)
    assert not (settings.paths.adapters / "long").exists()
