"""A person's edits to a plan card: the Plan tab's form and JSON editor, and the
assistant's "2 runs". Every edit goes through the card's own validation (pydantic and
backend/hparams.py), so the form, the JSON and the assistant make the same card."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from backend.errors import ConfigError
from backend.names import validate_name
from backend.training.plan import PlanCard, sweep_for


def resize_plan(plan: PlanCard, runs: int) -> PlanCard:
    """The same plan with ``runs`` runs in its sweep (the default first, then variations
    of the plan's own knobs)."""
    return plan.model_copy(update={"sweep": sweep_for(plan.lora, plan.train, max_runs=runs)})


def edit_plan(plan: PlanCard, *, name: str | None = None, system_prompt: str | None = None,
              probe_prompts: list[str] | None = None, runs: int | None = None, epochs: float | None = None,
              learning_rate: float | None = None, rank: int | None = None) -> PlanCard:
    """Apply a person's edits from the plan form; validation errors come from pydantic/hparams."""
    update: dict[str, Any] = {}
    if name:
        update["name"] = validate_name(name.strip())
    if system_prompt is not None and system_prompt.strip():
        update["system_prompt"] = system_prompt.strip()
    if probe_prompts is not None:
        probes = [p.strip() for p in probe_prompts if p.strip()]
        if probes:
            update["probe_prompts"] = probes
    train_update = {k: v for k, v in {"epochs": epochs, "learning_rate": learning_rate}.items() if v}
    if "system_prompt" in update:
        train_update["system_prompt"] = update["system_prompt"]
    if train_update:
        update["train"] = plan.train.model_validate({**plan.train.model_dump(), **train_update})
    if rank and plan.equalizer and int(rank) == plan.lora.r:
        rank = None  # the form echoes the grid's default rank: keep the equalizer's per-cell ranks
    if rank and plan.equalizer:  # a new uniform rank replaces the equalizer grid
        update["lora"] = plan.lora.model_validate({"r": int(rank), "alpha": int(rank) * 2, "dropout": plan.lora.dropout})
        update["equalizer"] = None
    elif rank:
        update["lora"] = plan.lora.model_validate({**plan.lora.model_dump(), "r": int(rank), "alpha": int(rank) * 2})
    if epochs or learning_rate or rank:  # the reasons were for the defaults, not for these knobs
        update["defaults_why"] = []
    plan = plan.model_copy(update=update)
    if runs is not None or epochs or learning_rate or rank:  # the sweep follows the edited knobs
        plan = resize_plan(plan, runs or max(1, len(plan.sweep)))
    return plan


def plan_from_json(text: str) -> PlanCard:
    """A plan card from the JSON editor; a bad value is a :class:`ConfigError` naming each field."""
    try:
        return PlanCard.model_validate_json(text or "")
    except ValidationError as exc:
        raise ConfigError(f"The plan was not changed: {validation_message(exc)}",
                          fix="Correct the fields named above, or edit the plan with the form.") from None


def validation_message(exc: ValidationError) -> str:
    """``field.path: what is wrong; ...`` for every error pydantic found."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
