"""How a run's progress reads: the one wording of its losses, the one definition of its
tokens/s, what it is doing now (its phase, read from its stored events), and those events
as plain dicts, for the CLI's progress bar, the Train tab, the assistant and ``bench/train.py``."""

from __future__ import annotations

from typing import Any

TOKENS_PER_S_MEANS = ("tokens/s: the prompt and answer tokens (padding excluded) that training steps processed, "
                      "per second of training (evaluation excluded)")


def tokens_per_s(tokens: int | float, seconds: float) -> float | None:
    """The one tokens/s of TuneLab (:data:`TOKENS_PER_S_MEANS`): what the page and the CLI
    show while a run trains, what ``tunelab.json`` stores and what ``bench/train.py``
    reports as ``tokens_per_s`` (docs/performance.md). None before anything was timed."""
    if not tokens or seconds <= 0:
        return None
    return float(tokens) / seconds


def tokens_text(value: float | None) -> str:
    """``"398 tokens/s"``: the one wording of :func:`tokens_per_s` ("" when unknown)."""
    return f"{value:.0f} tokens/s" if value else ""


# What a running job is doing before its first step and after its last, as the worker
# reports it (``job_events`` of kind "phase"); a step is said as "step 3/18".
PHASE_IMPORTS = "loading the training libraries"
PHASE_SCORING = "scoring the adapter on the held-out rows"


def phase_loading(base_name: str) -> str:
    return f"loading the base {base_name}"


def phase_tokenizing(n_train: int, n_eval: int = 0) -> str:
    held = f" and {n_eval} held-out" if n_eval else ""
    return f"tokenizing {n_train} examples{held}"


def step_text(step: int, total: int) -> str:
    return f"step {step}/{total}"


def loss_parts(progress: dict) -> list[str]:
    """``["loss 1.234", "eval 1.301"]`` from a progress snapshot: the one wording of the
    losses for the CLI, the page and the assistant."""
    parts = []
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.3f}")
    if progress.get("eval_loss") is not None:
        parts.append(f"eval {progress['eval_loss']:.3f}")
    return parts


def event_dict(row) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat() if row.at else None, "kind": row.kind, "step": row.step,
            "total_steps": row.total_steps, "loss": row.loss, "eval_loss": row.eval_loss,
            "tokens_per_s": row.tokens_per_s, "eta_s": row.eta_s, "message": row.message}


def this_attempt(events: list) -> list:
    """The events since the job's latest attempt began (a resumed job trains again)."""
    starts = [i for i, e in enumerate(events) if e.kind == "attempt"]
    return events[starts[-1]:] if starts else events


def scoring(events: list) -> bool:
    """True when the worker's latest word is that it is scoring the trained adapter."""
    said = [e.kind for e in this_attempt(events) if e.kind in ("attempt", "phase", "start", "progress", "proof")]
    return bool(said) and said[-1] == "proof"


def activity(job, events: list, total: int | None) -> str:
    """What the job is doing now, in a few words, from the worker's latest word: "queued",
    "loading the base ...", "tokenizing 48 examples", "step 3/18", "scoring the adapter ...",
    "stopping (cancel requested)"; "" once it is over."""
    if job.status == "queued":
        return "queued: starts when the runs before it are over"
    if job.status != "running":
        return ""
    if job.cancel_requested:
        return "stopping (cancel requested)"
    for event in reversed(events):
        if event.kind == "proof":
            return PHASE_SCORING
        if event.kind in ("progress", "start") and total:
            return step_text(event.step or 0, total)
        if event.kind == "phase" and event.message:
            return event.message
    return "starting the training process"
