"""How long a plan takes on this machine, from this machine's measured speed.

After every finished run the worker records what it measured (:func:`record_run`) in
``speed.json`` under the home (``settings.paths.training_speed``), one entry per base
and machine: seconds per trained token, the fixed cost of a run (starting the process,
loading the base, tokenizing, writing the adapter), seconds per held-out row evaluated
and scored. Before the first run on a base, :func:`backend.training.run.probe_speed` times
a few real forward+backward steps (in a child process, :mod:`backend.training.probe`) and
records the same entry.

:func:`estimate` turns an entry and a plan's numbers into "about X, at most Y": the
ceiling is every planned step (early stopping and the time budget can only end a run
sooner); "about" assumes the run stops where the last early-stopped run on this base
did, as a share of its steps. A sweep on one machine trains its runs one after another.
Pure apart from reading and writing that one file; no model library.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from backend.atomic import replace_file


class Speed(BaseModel):
    """What one base trains at on one machine, as measured."""

    base: str
    machine: str
    s_per_token: float = Field(gt=0, description="Seconds of training per token trained (prompt and answer).")
    tokens_per_example: float = Field(gt=0, description="Tokens per training example in the measured run.")
    doctor_mean_tokens: float | None = Field(None, description="The data doctor's mean tokens per example "
                                             "of that run's data, to scale tokens_per_example to other data.")
    fixed_s: float = Field(ge=0, description="Seconds of a run that do not grow with its steps.")
    eval_s_per_row: float = Field(0.0, ge=0, description="Seconds per held-out row per evaluation.")
    proof_s_per_row: float = Field(0.0, ge=0, description="Seconds per held-out row of the proof after training.")
    stopped_share: float = Field(1.0, gt=0, le=1, description="Share of its planned steps the run trained.")
    source: str = ""
    at: str = ""


def machine_id() -> str:
    """This machine, as far as speed goes: the CPU model and the cores this process may use
    (and the GPUs named by CUDA_VISIBLE_DEVICES, when set)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{model or 'cpu'} x{cores}" + (f" gpu {gpus}" if gpus else "")


def _key(base: str, machine: str) -> str:
    return f"{base} @ {machine}"


def read_speed(path: Path, base: str, machine: str | None = None) -> Speed | None:
    """The measured speed of ``base`` on this machine, or None (never measured, or an unreadable file)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        entry = entries.get(_key(base, machine or machine_id()))
        return Speed.model_validate(entry) if entry else None
    except (OSError, ValueError, AttributeError, ValidationError):
        return None


def write_speed(path: Path, speed: Speed) -> Speed:
    """Store ``speed`` for its base and machine (other entries kept)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    speed = speed.model_copy(update={"at": speed.at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    entries[_key(speed.base, speed.machine)] = speed.model_dump()
    replace_file(Path(path), json.dumps(entries, indent=2) + "\n")
    return speed


def record_run(path: Path, *, base: str, adapter: str, metrics: dict, wall_s: float, proof_s: float = 0.0,
               planned_steps: int | None = None, doctor_mean_tokens: float | None = None) -> Speed | None:
    """Record what a finished run measured (its ``tunelab.json`` metrics, the job's wall time
    from being picked up to done, and the proof's seconds); None when it measured too little."""
    tokens, train_s = metrics.get("train_tokens") or 0, metrics.get("train_seconds") or 0.0
    steps, examples = metrics.get("steps") or 0, metrics.get("examples") or 0
    if tokens <= 0 or train_s <= 0 or steps <= 0:
        return None
    seen = (metrics.get("epochs_trained") or 0) * examples or steps
    eval_s = metrics.get("eval_seconds") or 0.0
    evaluated = (metrics.get("evaluations") or 0) * (metrics.get("eval_examples") or 0)
    eval_rows = metrics.get("eval_examples") or 0
    speed = Speed(base=base, machine=machine_id(), s_per_token=train_s / tokens, tokens_per_example=tokens / seen,
                  doctor_mean_tokens=doctor_mean_tokens,
                  fixed_s=max(0.0, wall_s - train_s - eval_s - proof_s - (metrics.get("waited_for_serving_s") or 0.0)),
                  eval_s_per_row=eval_s / evaluated if evaluated else 0.0,
                  proof_s_per_row=proof_s / eval_rows if eval_rows and proof_s else 0.0,
                  stopped_share=min(1.0, steps / planned_steps) if planned_steps else 1.0,
                  source=f"measured on the run of {adapter}")
    earlier = read_speed(path, base)
    if earlier is not None and earlier.source.startswith("measured"):  # one run's noise halved: the mean of the two
        mean = {k: (getattr(speed, k) + getattr(earlier, k)) / 2 for k in AVERAGED}
        speed = speed.model_copy(update={**mean, "source": f"measured on the runs of {adapter} and before"})
    return write_speed(path, speed)


AVERAGED = ("s_per_token", "fixed_s", "eval_s_per_row", "proof_s_per_row")


def planned_steps(n_train: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of a run (one process, no gradient accumulation), as the trainer counts them."""
    return max(1, math.ceil(epochs * math.ceil(max(1, n_train) / max(1, batch_size))))


def estimate(speed: Speed, *, n_train: int, n_eval: int, batch_size: int, epochs: float, runs: int = 1,
             early_stopping: bool = False, time_budget_s: float | None = None,
             doctor_mean_tokens: float | None = None, proof: bool = True) -> dict:
    """``{"about_s", "at_most_s", "steps", "runs", "source"}`` for a plan of ``runs`` runs of
    ``n_train`` examples each (``n_eval`` held out), from ``speed``."""
    steps = planned_steps(n_train, batch_size, epochs)
    per_example = speed.tokens_per_example
    if doctor_mean_tokens and speed.doctor_mean_tokens:
        per_example *= doctor_mean_tokens / speed.doctor_mean_tokens
    examples = min(steps * batch_size, math.ceil(epochs * n_train))
    train_s = examples * per_example * speed.s_per_token
    every = min(math.ceil(max(1, n_train) / max(1, batch_size)), 50)  # run.eval_interval with early stopping
    evaluations = 0 if not n_eval else (steps // every + (steps % every > 0) if early_stopping else 5)
    eval_s = evaluations * n_eval * speed.eval_s_per_row
    scoring_s = n_eval * speed.proof_s_per_row if proof and n_eval else 0.0
    capped = min(train_s + eval_s, time_budget_s) if time_budget_s else train_s + eval_s
    most = speed.fixed_s + capped + scoring_s
    share = speed.stopped_share if early_stopping else 1.0
    about = speed.fixed_s + capped * share + scoring_s
    return {"about_s": about * runs, "at_most_s": most * runs, "steps": steps, "runs": runs,
            "source": speed.source, "machine": speed.machine}


def duration_text(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 10 min"``: a person's rounding of a time estimate."""
    seconds = max(1, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def estimate_text(estimate: dict | None) -> str:
    """The plan card's line: "about 2 min, at most 5 min on this machine (3 runs one after
    another; measured on the run of wine)"."""
    if not estimate:
        return ""
    about, most = duration_text(estimate["about_s"]), duration_text(estimate["at_most_s"])
    runs = estimate.get("runs", 1)
    when = f"about {about}" if about == most else f"about {about}, at most {most}"
    parts = [f"{runs} runs one after another"] if runs > 1 else []
    parts += [estimate.get("source") or ""]
    detail = "; ".join(p for p in parts if p)
    return f"{when} on this machine" + (f" ({detail})" if detail else "")
