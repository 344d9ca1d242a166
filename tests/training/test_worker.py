"""The worker's command line and the light side of training: they load no model library.

The job runner lives in the app process and the worker answers usage errors at once,
so ``backend.training.jobs``, ``plan``, ``progress``, ``checkpoints``, the worker's
module and the native kernels' settings import no torch; only the run itself does."""

from __future__ import annotations

import subprocess
import sys

from backend.settings import PROJECT_ROOT

LIGHT = ("backend.training.jobs", "backend.training.worker", "backend.training.plan", "backend.training.progress",
         "backend.training.checkpoints", "backend.training.cpu.native", "backend.training.cpu.memory")
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "gradio")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_light_training_modules_load_no_model_library():
    out = _python(f"import sys; import {', '.join(LIGHT)}; "
                  f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing the light training modules loaded: {out.stdout.strip()}"


def test_the_worker_answers_a_usage_error_without_training():
    out = _python("", "-m", "backend.training.worker", "not-a-number")
    assert out.returncode == 2 and "usage: python -m backend.training.worker JOB_ID" in out.stderr
