"""Plan edits from the form and the JSON editor: validated by the card's own rules, and
the previous card stays when an edit is refused."""

from __future__ import annotations

import json

import pytest

from backend.errors import ConfigError, InvalidName
from backend.studio.plan_form import edit_plan, plan_from_json
from backend.studio.tools import AssistantTools


def test_plan_edits_validate_and_apply(service, state):
    tools = AssistantTools(service, state)
    tools.set_goal("autumn mood")
    plan = edit_plan(state.plan, name="fall-r4", runs=1, epochs=2, learning_rate=1e-3, rank=4,
                     probe_prompts=["a", " ", "b"], system_prompt="Write like October.")
    assert (plan.name, len(plan.sweep), plan.train.epochs, plan.lora.r, plan.lora.alpha) == ("fall-r4", 1, 2, 4, 8)
    assert plan.probe_prompts == ["a", "b"] and plan.train.system_prompt == "Write like October."
    text = plan.render_markdown()
    assert "r4, lr 0.001, batch 4, up to 2 epochs" in text
    assert "Why these defaults" not in text and "set by you" in text
    with pytest.raises(InvalidName):
        edit_plan(state.plan, name="Not A Name")


def test_json_edits_validate_and_name_each_bad_field(service, state):
    AssistantTools(service, state).set_goal("classify wine as red or white")
    card = state.plan.model_dump()
    assert plan_from_json(state.plan.model_dump_json()) == state.plan
    card["train"]["learning_rate"] = 5
    card["lora"]["r"] = 0
    with pytest.raises(ConfigError) as caught:
        plan_from_json(json.dumps(card))
    text = str(caught.value)
    assert text.startswith("The plan was not changed:") and "train.learning_rate" in text and "lora.r" in text
    with pytest.raises(ConfigError, match="The plan was not changed"):
        plan_from_json("{not json")
