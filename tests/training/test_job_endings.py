"""How a job ends when its worker does not say so itself: the store shows the final status
as soon as the process is gone (no runner restart needed), and a failure's reason is the
real error, never a warning the log happened to end with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from backend.settings import PROJECT_ROOT
from backend.training.jobs import ATTEMPT_BANNER, JobRunner, log_tail
from tests.builders import tiny_spec, write_color_data

WARNING = "/site-packages/transformers/x.py:12: FutureWarning: `foo` is deprecated"


@pytest.fixture()
def runner(settings):
    runner = JobRunner(settings, poll_s=0.2)
    yield runner
    runner.close()


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {predicate}")


def test_log_tail_is_the_latest_attempt_without_warning_lines(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text(f"\n{ATTEMPT_BANNER}1 =====\nold error\n\n{ATTEMPT_BANNER}2 =====\nTraceback (most recent call last):\n"
                   f"  File \"x.py\", line 1\nValueError: boom\n{WARNING}\n  warnings.warn(\n")
    assert log_tail(log) == 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'


def test_a_worker_dying_without_a_reason_fails_with_its_error_not_a_warning(settings, tmp_path):
    script = tmp_path / "dies.sh"  # stands in for the python that runs the worker
    script.write_text(f"#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'ValueError: boom' >&2\n"
                      f"echo '{WARNING}' >&2\necho '  warnings.warn(' >&2\nexit 3\n")
    script.chmod(0o755)
    runner = JobRunner(settings, poll_s=0.2, python=str(script))
    job_id = runner.submit(tiny_spec("dies", "base"), write_color_data(tmp_path / "data"))
    assert runner.run_pending() == [job_id]
    job = runner.store.get_job(job_id)
    assert job.status == "failed" and job.error.startswith("The training process exited with code 3.")
    assert job.error.endswith("ValueError: boom") and "Warning" not in job.error
    assert runner.store.get_adapter("dies").status == "failed"
    runner.close()


def _stand_in_worker(runner, job_id):
    """A process that looks like job ``job_id``'s worker, started by no runner."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "backend.training.worker",
                             str(job_id)])
    runner.store.update_job(job_id, status="running", pid=proc.pid)
    return proc


def test_a_cancelled_job_whose_process_ends_is_cancelled_at_once(runner, tmp_path):
    job_id = runner.submit(tiny_spec("stopped", "base"), write_color_data(tmp_path / "data"))
    proc = _stand_in_worker(runner, job_id)
    assert runner.cancel(job_id) in ("running", "cancelled")  # SIGTERM goes to the process
    proc.wait(timeout=10)
    assert runner.progress(job_id)["status"] == "cancelled"
    assert runner.store.get_adapter("stopped").status == "cancelled"
    assert [p["status"] for p in runner.jobs()] == ["cancelled"]


def test_cancel_of_a_running_job_whose_process_is_gone_ends_it_at_once(runner, tmp_path):
    job_id = runner.submit(tiny_spec("gone", "base"), write_color_data(tmp_path / "data"))
    proc = _stand_in_worker(runner, job_id)
    proc.kill()
    proc.wait()
    assert runner.cancel(job_id) == "cancelled"
    assert runner.store.get_job(job_id).status == "cancelled"


def test_a_real_worker_killed_with_no_runner_waiting_is_failed_at_once(runner, settings, tiny_llama, tmp_path):
    job_id = runner.submit(tiny_spec("crashed", tiny_llama), write_color_data(tmp_path / "data"))
    run_dir = settings.paths.run_dir(job_id)
    run_dir.mkdir(parents=True)
    with open(run_dir / "stderr.log", "w") as err:
        err.write(f"{WARNING}\n  warnings.warn(\n")
        proc = subprocess.Popen([sys.executable, "-m", "backend.training.worker", str(job_id)], stderr=err,
                                env=runner.worker_env(), cwd=str(PROJECT_ROOT))
    pid = _wait_for(lambda: runner.store.get_job(job_id).pid)  # it marked itself running
    assert pid == proc.pid and runner.store.get_job(job_id).status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    progress = runner.progress(job_id)
    assert progress["status"] == "failed" and "stopped without finishing" in progress["error"]
    assert "Warning" not in progress["error"]
    assert runner.store.get_adapter("crashed").status == "failed"


def test_a_real_worker_failing_at_once_keeps_its_own_reason(runner, tiny_llama, tmp_path):
    data = write_color_data(tmp_path / "data")
    job_id = runner.submit(tiny_spec("badrow", tiny_llama), data)
    data.write_text('{"messages": "not a list"}\n')  # a file that exists, with a bad row
    runner.run_pending()
    job = runner.store.get_job(job_id)
    assert job.status == "failed" and "bad row" in job.error
    assert not job.error.startswith("The training process") and "Warning" not in job.error
