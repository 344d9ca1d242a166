"""`--processes 2`: one job, two DDP ranks under accelerate launch (gloo on this CPU), run by
the real job runner on the tiny Llama. Progress and the adapter come from rank 0 only; a
pause and a resume restart both ranks from the checkpoint; a cancel leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.adapter_folder import read_meta
from backend.training.jobs import JobRunner
from tests.builders import tiny_spec, wait_for, write_color_data


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
    wait_for(lambda: (runner.store.get_job(job_id).step or 0) >= 2, timeout=180)
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
    assert metrics["strategy"] == "ddp"  # CPU ranks: DDP over gloo (accelerate shards with FSDP on GPUs only)
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


def test_a_cancel_before_the_first_step_stops_every_rank(settings, tiny_llama, tmp_path):
    """Rank 0 ends the job at its first look at the flag; rank 1, already waiting for it to
    train, is stopped by the runner soon after, not at the end of its (here 10-minute) grace
    for a stopping job. (A stop within a run, every rank at one step: the pause above.)"""
    runner = JobRunner(settings, poll_s=0.2, grace_s=600)
    try:
        data = write_color_data(tmp_path / "data")
        job_id = runner.submit(tiny_spec("long", tiny_llama, epochs=100, processes=2), data)
        runner.start()
        wait_for(lambda: len(processes_of_home(settings.home)) >= 3, timeout=180)  # the launcher and both ranks
        # rank 0 listens for SIGTERM once it reports a phase
        wait_for(lambda: any(e["kind"] == "phase" for e in runner.events(job_id)), timeout=180)
        runner.cancel(job_id)
        assert runner.wait(job_id, timeout=120) == "cancelled"
        wait_for(lambda: processes_of_home(settings.home) == [], timeout=120)
        assert not (settings.paths.adapters / "long").exists()
        assert runner.store.get_adapter("long").status == "cancelled"
    finally:
        runner.close()


@pytest.mark.slow
def test_two_processes_on_the_default_base(home, tmp_path):
    """SmolLM2-135M in two gloo ranks (the model cache of the checkout when it has one)."""
    from peft import PeftModel

    from backend.bases.load import load_model
    from backend.bases.resolve import resolve_base
    from backend.hparams import RunSpec
    from backend.settings import PROJECT_ROOT, Settings

    cache = PROJECT_ROOT / ".tunelab" / "models"
    settings = Settings(home=home, models_dir=cache if cache.is_dir() else None)
    ref = resolve_base("default", settings)
    runner = JobRunner(settings, poll_s=0.5)
    try:
        data = write_color_data(tmp_path / "data", n=8)
        spec = RunSpec(name="smol2", train={"epochs": 1, "batch_size": 4, "max_length": 64, "eval_fraction": 0,
                                           "processes": 2, "early_stopping": False})
        job_id = runner.submit(spec, data)
        runner.run_pending()
        assert runner.store.get_job(job_id).status == "done", runner.store.get_job(job_id).error
    finally:
        runner.close()
    assert processes_of_home(home) == []
    out = settings.paths.adapters / "smol2"
    assert read_meta(out)["metrics"]["processes"] == 2
    PeftModel.from_pretrained(load_model(ref), out)


def test_a_rank_that_dies_takes_the_whole_job_down(settings, tiny_llama, tmp_path):
    """Rank 1 killed mid-run (out of memory, a node lost): rank 0 cannot go on alone, the job
    fails with a reason, and no process of it is left."""
    import os
    import signal

    runner = JobRunner(settings, poll_s=0.2, grace_s=600)
    try:
        data = write_color_data(tmp_path / "data")
        job_id = runner.submit(tiny_spec("crash", tiny_llama, epochs=100, processes=2), data)
        runner.start()
        wait_for(lambda: (runner.store.get_job(job_id).step or 0) >= 1, timeout=180)
        rank1 = [pid for pid in processes_of_home(settings.home)
                 if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGKILL)
        assert runner.wait(job_id, timeout=180) == "failed"
        wait_for(lambda: processes_of_home(settings.home) == [], timeout=60)
        error = runner.store.get_job(job_id).error  # rank 0's own: gloo's "Connection reset by peer"
        assert error and not (settings.paths.adapters / "crash").exists()
    finally:
        runner.close()
