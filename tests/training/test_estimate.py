"""The plan card's time estimate and a run's phases, on real runs of the tiny Llama through
the job runner and real worker processes: the estimate made from one run's measured speed
is within 30% of the next run's real time, and a run says what it does from its first second."""

from __future__ import annotations

import json
import threading
import time

import pytest

from backend.settings import Settings
from backend.training.estimate import (Speed, duration_text, estimate, estimate_text, planned_steps, read_speed,
                                       write_speed)
from backend.training.jobs import JobRunner
from tests.builders import tiny_spec, write_color_data


@pytest.fixture(scope="module")
def measured(tiny_llama, tmp_path_factory):
    """Two runs through the runner (the first watched every 20 ms from another thread), whose
    measured speed the worker records for the base (the mean of the two)."""
    # the native kernels off: their one-time build in a fresh home would land in the first run's fixed cost only
    settings = Settings(home=tmp_path_factory.mktemp("home"), database_url=None, native_kernels=False)
    runner = JobRunner(settings, poll_s=0.05)
    data = write_color_data(tmp_path_factory.mktemp("data"), n=48)
    job = runner.submit(tiny_spec("first", tiny_llama, epochs=2, early_stopping=False), data)
    seen: list[str] = []
    thread = threading.Thread(target=runner.run_pending)
    thread.start()
    while thread.is_alive():
        activity = runner.progress(job)["activity"]
        if activity and (not seen or seen[-1] != activity):
            seen.append(activity)
        time.sleep(0.02)
    thread.join()
    runner.submit(tiny_spec("again", tiny_llama, epochs=2, early_stopping=False), data)
    runner.run_pending()
    yield runner, settings, data, job, seen
    runner.close()


def test_the_worker_says_each_phase_before_the_first_step(measured, tiny_llama):
    runner, _, _, job, seen = measured
    assert runner.progress(job)["status"] == "done"
    phases = [e["message"] for e in runner.events(job) if e["kind"] == "phase"]
    assert phases[0] == "loading the training libraries"
    assert phases[1] == f"loading the base {tiny_llama.name}"
    assert phases[2].startswith("tokenizing ") and phases[2].split()[1].isdigit()
    steps = [a for a in seen if a.startswith("step ")]
    assert steps and steps[-1].endswith(f"/{runner.progress(job)['total_steps']}")
    assert seen.index(steps[0]) > 0  # something was said before the first step
    assert all(a != "" for a in seen)


def test_a_finished_run_records_its_speed_and_the_plan_steps_match_the_trainer(measured, tiny_llama):
    runner, settings, _, job, _ = measured
    speed = read_speed(settings.paths.training_speed, str(tiny_llama))
    assert speed is not None and speed.s_per_token > 0 and speed.fixed_s > 0
    assert speed.source == "measured on the runs of again and before"
    meta = json.loads((settings.paths.adapters / "first" / "tunelab.json").read_text())
    m = meta["metrics"]
    assert m["steps"] == planned_steps(m["examples"], 4, 2.0) == runner.progress(job)["total_steps"]
    assert m["tokens_per_s"] == pytest.approx(m["train_tokens"] / m["train_seconds"])


def test_the_estimate_is_within_30_percent_of_the_real_time(measured, tiny_llama):
    runner, settings, data, _, _ = measured
    speed = read_speed(settings.paths.training_speed, str(tiny_llama))
    first = json.loads((settings.paths.adapters / "first" / "tunelab.json").read_text())["metrics"]
    spec = tiny_spec("second", tiny_llama, epochs=3, early_stopping=False)
    guess = estimate(speed, n_train=first["examples"], n_eval=first["eval_examples"], batch_size=4, epochs=3,
                     early_stopping=False, proof=False)
    job = runner.submit(spec, data)
    started = time.perf_counter()
    runner.run_pending()
    real = time.perf_counter() - started
    assert runner.progress(job)["status"] == "done"
    assert guess["steps"] == runner.progress(job)["total_steps"]
    assert 0.7 <= guess["at_most_s"] / real <= 1.3, (guess, real)


def test_the_card_says_about_and_at_most_and_counts_the_sweep(tmp_path):
    speed = Speed(base="b", machine="m", s_per_token=0.001, tokens_per_example=50, fixed_s=10, eval_s_per_row=0.01,
                  stopped_share=0.5, source="measured on the run of x")
    one = estimate(speed, n_train=40, n_eval=10, batch_size=4, epochs=3, early_stopping=True)
    three = estimate(speed, n_train=40, n_eval=10, batch_size=4, epochs=3, early_stopping=True, runs=3)
    assert one["about_s"] < one["at_most_s"] and three["at_most_s"] == pytest.approx(3 * one["at_most_s"])
    text = estimate_text(three)
    assert text.startswith("about ") and ", at most " in text and "3 runs one after another" in text
    budget = estimate(speed, n_train=4000, n_eval=0, batch_size=4, epochs=10, time_budget_s=60)
    assert budget["at_most_s"] == pytest.approx(10 + 60)  # the time budget caps the training
    assert duration_text(45) == "45 s" and duration_text(150) == "2 min" and duration_text(4200) == "1 h 10 min"
    path = tmp_path / "speed.json"
    write_speed(path, speed)
    assert read_speed(path, "b", "m") == speed.model_copy(update={"at": read_speed(path, "b", "m").at})
    assert read_speed(path, "other", "m") is None
    path.write_text("{broken")
    assert read_speed(path, "b", "m") is None
