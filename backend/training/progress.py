"""How a run's progress reads: the one wording of its losses, and its stored events as
plain dicts, for the CLI's progress bar, the Train tab and the assistant."""

from __future__ import annotations

from typing import Any


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
