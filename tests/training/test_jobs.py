"""The job runner end to end: real worker subprocesses, a real SQLite store, the tiny
Llama. Each test checks what a person would see: statuses, events, folders on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.adapter_folder import ADAPTER_FILES, read_meta
from backend.errors import InvalidName, JobError
from backend.settings import PROJECT_ROOT, Settings
from backend.training.jobs import JobRunner
from backend.training.plan import make_sweep
from tests.builders import COLORS, answer_loss, make_earlier_adapter, snapshot, tiny_spec, wait_for, write_color_data


@pytest.fixture()
def runner(settings):
    ready = []
    runner = JobRunner(settings, on_adapter_ready=lambda name, path: ready.append((name, path)), poll_s=0.2)
    runner.ready = ready
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def colors_job(tiny_llama, tmp_path_factory):
    """One job run to the end through the runner and a real worker process, once for the
    module: the runner, the job id, the adapter folder and what was announced."""
    settings = Settings(home=tmp_path_factory.mktemp("home"), database_url=None)
    ready = []
    runner = JobRunner(settings, on_adapter_ready=lambda name, path: ready.append((name, path)), poll_s=0.2)
    data = write_color_data(tmp_path_factory.mktemp("data"))
    job_id = runner.submit(tiny_spec("colors", tiny_llama, epochs=4), data, data_hash="sha256:abc")
    queued = runner.store.get_adapter("colors").status
    ran = runner.run_pending()
    yield SimpleNamespace(runner=runner, settings=settings, job_id=job_id, queued=queued, ran=ran, ready=ready,
                          out=settings.paths.adapters / "colors")
    runner.close()


def test_a_job_runs_to_done_and_announces_its_adapter(colors_job):
    runner, job_id, out = colors_job.runner, colors_job.job_id, colors_job.out
    assert colors_job.queued == "queued" and colors_job.ran == [job_id]
    job = runner.store.get_job(job_id)
    assert (job.status, job.error, job.attempts) == ("done", None, 1)
    assert runner.store.get_adapter("colors").status == "done"
    assert colors_job.ready == [("colors", out)]
    assert sorted(p.name for p in out.iterdir()) == sorted(ADAPTER_FILES)
    assert [p.name for p in colors_job.settings.paths.adapters.iterdir()] == ["colors"]  # no temp folder left


def test_the_job_writes_its_run_into_tunelab_json(colors_job, tiny_llama):
    meta = read_meta(colors_job.out)
    assert meta["status"] == "done" and meta["verdict"] is None and meta["data_hash"] == "sha256:abc"
    assert meta["hyperparameters"]["train"]["epochs"] == 4 and meta["hyperparameters"]["lora"]["r"] == 8
    assert meta["base"]["spec"] == str(tiny_llama) and meta["goal"] == "say the color"
    metrics = meta["metrics"]
    assert metrics["answer_tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["eval_loss"] is not None
    steps = [h["step"] for h in meta["loss_history"] if h["loss"] is not None]
    assert steps == list(range(1, metrics["steps"] + 1))


def test_progress_events_are_stored_and_followed(colors_job):
    """Progress events persisted, steps increasing, a snapshot for a progress bar."""
    runner, job_id = colors_job.runner, colors_job.job_id
    meta = read_meta(colors_job.out)
    metrics = meta["metrics"]
    steps = [h["step"] for h in meta["loss_history"] if h["loss"] is not None]
    events = runner.events(job_id)
    progress = [e for e in events if e["kind"] == "progress" and e["loss"] is not None]
    assert [e["step"] for e in progress] == steps
    assert all(e["total_steps"] == metrics["steps"] for e in progress)
    assert events[-1]["kind"] == "done"
    snap = runner.progress(job_id)
    assert snap["status"] == "done" and snap["step"] == snap["total_steps"] == metrics["steps"]
    assert snap["eval_loss"] == pytest.approx(metrics["eval_loss"])
    assert len(snap["loss_history"]) >= len(steps)
    assert [e["kind"] for e in runner.follow(job_id)][-1] == "done"


def test_plain_peft_loads_the_adapter_and_it_fits_the_data_better(colors_job, tiny_llama):
    """Plain peft loads it, it changes the output, and it fits the training data better than the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = [[{"role": "user", "content": f"color of {k}?"}, {"role": "assistant", "content": v}]
            for k, v in COLORS.items()]
    base_loss = answer_loss(base, tokenizer, rows)
    ids = tokenizer.apply_chat_template(rows[0][:1], add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    tuned = PeftModel.from_pretrained(base, colors_job.out).eval()
    with torch.no_grad():
        tuned_logits = tuned(input_ids=ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)
    assert answer_loss(tuned, tokenizer, rows) < base_loss - 0.5


def test_names_refused_when_invalid_or_taken(runner, settings, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    make_earlier_adapter(settings, tiny_llama, "done-one")
    with pytest.raises(InvalidName, match="Invalid adapter name 'Bad Name'"):
        runner.submit(tiny_spec("Bad Name", tiny_llama), data)
    with pytest.raises(InvalidName):
        runner.submit(tiny_spec("../escape", tiny_llama), data)
    with pytest.raises(JobError, match="'done-one' already exists"):
        runner.submit(tiny_spec("done-one", tiny_llama), data)
    first = runner.submit(tiny_spec("pending", tiny_llama), data)
    with pytest.raises(JobError, match=f"already being trained by job {first}"):
        runner.submit(tiny_spec("pending", tiny_llama), data)
    with pytest.raises(JobError, match="does not exist"):
        runner.submit(tiny_spec("fresh", tiny_llama), tmp_path / "missing.jsonl")
    # a queued job is cancelled at once, and its name is free again
    assert runner.cancel(first) == "cancelled"
    assert runner.store.get_job(first).status == "cancelled"
    assert runner.store.get_adapter("pending").status == "cancelled"
    with pytest.raises(JobError, match="already cancelled"):
        runner.cancel(first)
    assert runner.submit(tiny_spec("pending", tiny_llama), data) > first


def test_cancel_running_job_keeps_earlier_adapters(runner, settings, tiny_llama, tmp_path):
    earlier = make_earlier_adapter(settings, tiny_llama)
    before = snapshot(earlier)
    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("long", tiny_llama, epochs=100), data)
    runner.start()
    wait_for(lambda: runner.store.get_job(job_id).step >= 2)
    assert runner.cancel(job_id) == "running"
    assert runner.wait(job_id, timeout=60) == "cancelled"
    job = runner.store.get_job(job_id)
    assert job.step < job.total_steps and "cancelled at step" in job.error
    assert runner.store.get_adapter("long").status == "cancelled"
    assert not (settings.paths.adapters / "long").exists()
    assert sorted(p.name for p in settings.paths.adapters.iterdir()) == ["earlier"]
    assert snapshot(earlier) == before and runner.store.get_adapter("earlier").status == "done"
    assert not (settings.paths.run_dir(job_id) / "checkpoints").exists()
    assert runner.ready == []


def test_crashing_run_fails_with_reason(runner, settings, tiny_llama, tmp_path):
    earlier = make_earlier_adapter(settings, tiny_llama)
    before = snapshot(earlier)
    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("broken", tiny_llama), data)
    data.write_text('{"messages": "not a list"}\n{oops\n')  # corrupted after it was queued
    runner.run_pending()
    job = runner.store.get_job(job_id)
    assert job.status == "failed"
    assert "train.jsonl has 2 bad rows" in job.error and "line 2: not JSON" in job.error
    adapter = runner.store.get_adapter("broken")
    assert adapter.status == "failed" and "bad row" in adapter.error
    assert runner.events(job_id)[-1]["kind"] == "failed"
    assert "DataError" in (settings.paths.run_dir(job_id) / "stderr.log").read_text()
    assert sorted(p.name for p in settings.paths.adapters.iterdir()) == ["earlier"]
    assert snapshot(earlier) == before


def test_worker_killed_by_a_signal_is_a_failure_with_its_log(runner, settings, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("killed", tiny_llama, epochs=100), data)
    runner.start()
    pid = wait_for(lambda: runner.store.get_job(job_id).step >= 1 and runner.store.get_job(job_id).pid)
    os.kill(pid, signal.SIGKILL)
    assert runner.wait(job_id, timeout=60) == "failed"
    job = runner.store.get_job(job_id)
    assert job.error.startswith("The training process was killed by signal 9.")
    assert runner.store.get_adapter("killed").status == "failed"


def test_resume_after_runner_and_worker_were_killed(settings, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    first = JobRunner(settings)
    job_id = first.submit(tiny_spec("resumed", tiny_llama, epochs=5, save_steps=2), data)
    first.close()
    # the app (runner) runs in its own process, as it would in production
    app = subprocess.Popen(
        [sys.executable, "-c", "from backend.training.jobs import JobRunner; from backend.settings import Settings; "
         "JobRunner(Settings()).run_pending()"],
        cwd=PROJECT_ROOT, env={**os.environ, "TUNELAB_HOME": str(settings.home)}, start_new_session=True)
    runs = settings.paths.run_dir(job_id) / "checkpoints"
    try:
        wait_for(lambda: any((p / "trainer_state.json").is_file() for p in runs.glob("checkpoint-*")))
        worker_pid = JobRunner(settings).store.get_job(job_id).pid
        os.kill(app.pid, signal.SIGKILL)
        os.kill(worker_pid, signal.SIGKILL)
    finally:
        app.kill()
        app.wait()
    runner = JobRunner(settings, poll_s=0.2)
    wait_for(lambda: not Path(f"/proc/{worker_pid}").exists() or
             Path(f"/proc/{worker_pid}/stat").read_text().split(") ", 1)[-1][:1] == "Z", timeout=10)
    job = runner.store.get_job(job_id)
    assert job.status == "running" and 0 < job.step < job.total_steps
    assert runner.recover() == [job_id]
    assert runner.store.get_job(job_id).status == "queued"
    assert runner.run_pending() == [job_id]

    job = runner.store.get_job(job_id)
    assert (job.status, job.attempts) == ("done", 2)
    starts = [e for e in runner.events(job_id) if e["kind"] == "start"]
    assert starts[0]["step"] == 0 and starts[-1]["step"] >= 2  # the second attempt began at its checkpoint
    meta = read_meta(settings.paths.adapters / "resumed")
    assert meta["metrics"]["resumed_from_step"] == starts[-1]["step"]
    assert meta["metrics"]["steps"] == job.total_steps
    assert runner.progress(job_id)["resumed_from"] == starts[-1]["step"]
    runner.close()


def test_recover_gives_up_after_max_attempts(settings, tiny_llama, tmp_path):
    runner = JobRunner(settings, max_attempts=2)
    job_id = runner.submit(tiny_spec("flaky", tiny_llama), write_color_data(tmp_path / "data"))
    runner.store.update_job(job_id, status="running", attempts=2, pid=2 ** 22 + 7)  # a process that is gone
    assert runner.recover() == []
    job = runner.store.get_job(job_id)
    assert job.status == "failed" and "Gave up after 2 attempts" in job.error
    runner.close()


def test_sweep_trains_one_adapter_per_config(runner, settings, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    base = tiny_spec("sw", tiny_llama, epochs=1)
    specs = make_sweep(base, r=[4])
    ids = runner.submit_sweep(base, [{"r": 4}], data, data_hash="h")
    assert len(ids) == 2 and [runner.store.get_job(i).sweep for i in ids] == ["sw"] * 2
    runner.run_pending()
    assert sorted(runner.ready) == sorted((s.name, settings.paths.adapters / s.name) for s in specs)
    for spec in specs:
        meta = read_meta(settings.paths.adapters / spec.name)
        assert meta["hyperparameters"] == json.loads(spec.model_dump_json())
        config = json.loads((settings.paths.adapters / spec.name / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (spec.lora.r, spec.lora.alpha)
    assert read_meta(settings.paths.adapters / "sw-r4")["hyperparameters"]["lora"]["r"] == 4
    assert read_meta(settings.paths.adapters / "sw")["hyperparameters"]["lora"]["r"] == 8


def test_a_scored_run_is_handed_over_when_its_weights_are_final_not_after_its_proof(settings, tiny_llama, tmp_path):
    """The endpoint gets the adapter the moment the worker starts scoring it: the job is
    still running, the adapter is done and whole on disk, and its proof is not written yet.
    It is handed over once, and the job is done after the proof."""
    from backend.adapter_folder import is_complete
    from backend.data.normalized import read_rows, split_rows, write_rows

    seen = []

    def ready(name, path):
        row = runner.store.get_adapter(name)
        seen.append({"job": runner.store.get_job(row.job_id).status, "phase": runner.progress(row.job_id)["phase"],
                     "adapter": row.status, "whole": is_complete(path), "proof": "proof" in read_meta(path)})
        return True  # loaded: the runner records it

    runner = JobRunner(settings, on_adapter_ready=ready, poll_s=0.05)
    try:
        train, held = split_rows(read_rows(write_color_data(tmp_path / "all")), eval_fraction=0.25, seed=1)
        write_rows(tmp_path / "train.jsonl", train)
        write_rows(tmp_path / "eval.jsonl", held)
        job_id = runner.submit(tiny_spec("early", tiny_llama, epochs=1), tmp_path / "train.jsonl",
                               tmp_path / "eval.jsonl")
        runner.run_pending()
        assert seen == [{"job": "running", "phase": "scoring", "adapter": "done", "whole": True, "proof": False}]
        kinds = [e["kind"] for e in runner.events(job_id)]
        assert kinds[-3:] == ["proof", "served", "done"]
        done = runner.progress(job_id)
        assert (done["status"], done["phase"], done["served"]) == ("done", None, True)
        assert "proof" in read_meta(settings.paths.adapters / "early")
        assert runner.store.get_adapter("early").meta.get("proof") is not None  # the row has the proof too
    finally:
        runner.close()


def _held_out_split(tmp_path: Path) -> tuple[Path, Path]:
    from backend.data.normalized import read_rows, split_rows, write_rows

    train, held = split_rows(read_rows(write_color_data(tmp_path / "all")), eval_fraction=0.25, seed=1)
    write_rows(tmp_path / "train.jsonl", train)
    write_rows(tmp_path / "eval.jsonl", held)
    return tmp_path / "train.jsonl", tmp_path / "eval.jsonl"


def test_a_cancel_while_the_adapter_is_scored_stops_the_proof_and_keeps_the_adapter(settings, tiny_llama, tmp_path):
    """Cancelled the moment its proof starts: the worker stops scoring at once (not after the
    runner's grace), the job is cancelled, and the adapter, already served, stays done."""
    cancelled_at = []

    def ready(name, path):
        runner.cancel(runner.store.get_adapter(name).job_id)
        cancelled_at.append(time.monotonic())
        return True

    runner = JobRunner(settings, on_adapter_ready=ready, poll_s=0.05, grace_s=120)
    try:
        job_id = runner.submit(tiny_spec("stopped", tiny_llama, epochs=1), *_held_out_split(tmp_path))
        runner.run_pending()
        assert time.monotonic() - cancelled_at[0] < 30  # the proof stopped, not killed after the 120 s grace
        job = runner.store.get_job(job_id)
        assert job.status == "cancelled"
        assert runner.events(job_id)[-1]["message"] == ("cancelled while it was scored: the adapter is kept, "
                                                         "without its score")
        row, folder = runner.store.get_adapter("stopped"), settings.paths.adapters / "stopped"
        assert row.status == "done" and row.error is None
        assert sorted(p.name for p in folder.iterdir()) == sorted(ADAPTER_FILES) and "proof" not in read_meta(folder)
    finally:
        runner.close()


def test_a_run_interrupted_while_scored_resumes_by_scoring_not_training(settings, tiny_llama, tmp_path):
    """SIGTERM without a cancel while the adapter is scored (the app shutting down): the job
    goes back to the queue with its adapter done; its next attempt trains nothing, scores
    the same weights and ends done with the proof."""
    weights = []

    def ready(name, path):
        weights.append((path / "adapter_model.safetensors").read_bytes())
        if len(weights) == 1:
            os.kill(runner.store.get_job(runner.store.get_adapter(name).job_id).pid, signal.SIGTERM)
        return True

    runner = JobRunner(settings, on_adapter_ready=ready, poll_s=0.05, grace_s=120)
    try:
        job_id = runner.submit(tiny_spec("resumed", tiny_llama, epochs=1), *_held_out_split(tmp_path))
        assert runner.run_pending() == [job_id, job_id]  # requeued once, picked up again
        events = runner.events(job_id)
        kinds = [e["kind"] for e in events]
        assert "queued" in kinds and kinds[-3:] == ["proof", "served", "done"]
        second = events[max(i for i, e in enumerate(events) if e["kind"] == "attempt"):]
        assert second[0]["message"].endswith("the adapter is written: scoring it")
        assert not [e for e in second if e["kind"] in ("start", "progress")]  # nothing trained again
        assert len(weights) == 2 and weights[0] == weights[1]
        folder = settings.paths.adapters / "resumed"
        assert read_meta(folder)["proof"]["judged_by"]["rows"] > 0
        assert runner.store.get_adapter("resumed").status == "done"
    finally:
        runner.close()


def test_a_worker_left_by_an_earlier_app_is_adopted_and_its_adapter_handed_over_while_scored(settings, tiny_llama,
                                                                                            tmp_path):
    """The app stopped while its worker trained (the worker runs on, in its own session); the
    next app's runner adopts the worker and hands its adapter over the moment the worker
    starts scoring it, as it does for a worker of its own, then sees the job done."""
    from backend.training.launch import worker_command

    seen = []

    def ready(name, path):
        row = adopter.store.get_adapter(name)
        seen.append((adopter.store.get_job(row.job_id).status, adopter.progress(row.job_id)["phase"], row.status))
        return True

    earlier = JobRunner(settings)
    job_id = earlier.submit(tiny_spec("adopted", tiny_llama, epochs=1), *_held_out_split(tmp_path))
    job = earlier.store.claim_next_job()  # what the earlier app's runner did before it went away
    run_dir = earlier.paths.run_dir(job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stdout.log", "a") as out, open(run_dir / "stderr.log", "a") as err:
        worker = subprocess.Popen(worker_command(earlier.python, job.id), stdout=out, stderr=err,
                                  env=earlier.worker_env(), cwd=str(PROJECT_ROOT), start_new_session=True)
    earlier.store.update_job(job_id, pid=worker.pid)
    earlier.close()
    adopter = JobRunner(settings, on_adapter_ready=ready, poll_s=0.05)
    try:
        assert adopter.run_pending() == []  # nothing queued: the running job is adopted, not run again
        assert worker.wait(timeout=60) == 0
        assert seen == [("running", "scoring", "done")]
        kinds = [e["kind"] for e in adopter.events(job_id)]
        assert kinds[-3:] == ["proof", "served", "done"] and kinds.count("served") == 1
        assert adopter.store.get_job(job_id).status == "done"
    finally:
        adopter.close()


def test_worker_env_names_the_home_and_asks_malloc_for_huge_pages(settings, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    env = JobRunner(settings).worker_env()
    assert env["TUNELAB_HOME"] == str(settings.home)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"


def test_the_worker_builds_the_settings_the_runner_has(settings, tmp_path, monkeypatch):
    """The worker builds its Settings from the environment it is given: the runner's
    settings reach it even when they were set in code, not in the environment."""
    monkeypatch.delenv("TUNELAB_NATIVE_KERNELS", raising=False)
    mine = settings.model_copy(update={"native_kernels": False, "models_dir": tmp_path / "models"})
    env = JobRunner(mine).worker_env()
    with monkeypatch.context() as m:
        for key, value in env.items():
            if key.startswith("TUNELAB_"):
                m.setenv(key, value)
        theirs = Settings()
    assert (theirs.home, theirs.db_url, theirs.native_kernels, theirs.paths.models) == \
        (mine.home, mine.db_url, False, mine.paths.models)
    assert JobRunner(settings).worker_env()["TUNELAB_NATIVE_KERNELS"] == "true"


def test_a_run_with_held_out_rows_is_scored_before_it_is_done(runner, tiny_llama, tmp_path):
    """The worker proves the adapter after training (base vs adapter on the held-out rows,
    the same rows and prompts as the baseline) and says so while it does."""
    from backend.data.normalized import read_rows, split_rows, write_rows

    train, held = split_rows(read_rows(write_color_data(tmp_path / "all")), eval_fraction=0.25, seed=1)
    write_rows(tmp_path / "train.jsonl", train)
    write_rows(tmp_path / "eval.jsonl", held)
    spec = tiny_spec("proved", tiny_llama, epochs=2, system_prompt="Say the color.")
    job_id = runner.submit(spec, tmp_path / "train.jsonl", tmp_path / "eval.jsonl")
    runner.run_pending()
    kinds = [e["kind"] for e in runner.events(job_id)]
    assert kinds[-2:] == ["proof", "done"]  # the fixture's callback loads nothing: no "served"
    proof = read_meta(runner.settings.paths.adapters / "proved")["proof"]
    # the goal names no task; red/white answers are labels, so it is scored as a classification
    assert proof["task"] == "classification" and proof["system_prompt"] == "Say the color."
    assert proof["judged_by"]["rows"] == len(held)
    assert [proof["exact_match"][k]["total"] for k in ("base_zero_shot", "base_few_shot", "adapter")] == [len(held)] * 3
    assert proof["verdict"]["suggestion"] in ("too_few_rows", "changed_nothing")
    assert (tmp_path / "baseline.json").is_file()  # the base's answers, cached beside the import
