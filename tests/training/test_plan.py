"""Goal -> plan card, in English and Korean."""

from __future__ import annotations

import pytest

from backend.names import validate_name
from backend.training.plan import detect_kind, extract_labels, make_plan, sweep_for


@pytest.mark.parametrize("goal, kind", [
    ("make it write with an autumn mood", "style"),
    ("sort these support emails into billing / bugs / other", "classification"),
    ("classify wine as red or white", "classification"),
    ("pull product specs out of text as JSON", "extraction"),
    ("tell me if reviews are positive or negative", "sentiment"),
    ("가을 분위기로 글을 쓰게 해줘", "style"),
    ("이메일을 청구, 버그, 기타로 분류해줘", "classification"),
    ("제품 사양을 JSON으로 추출해줘", "extraction"),
])
def test_detect_kind(goal, kind):
    assert detect_kind(goal) == kind


@pytest.mark.parametrize("goal, labels", [
    ("sort these support emails into billing / bugs / other", ["billing", "bugs", "other"]),
    ("classify wine as red or white", ["red", "white"]),
    ("이메일을 청구, 버그, 기타로 분류해줘", ["청구", "버그", "기타"]),
    ("와인을 레드 또는 화이트로 분류해줘", ["레드", "화이트"]),
    ("make it write with an autumn mood", []),
])
def test_extract_labels(goal, labels):
    assert extract_labels(goal) == labels


def test_plan_card_is_complete_and_names_are_valid():
    card = make_plan("classify wine as red or white", n_examples=30)
    assert card.kind == "classification" and card.labels == ["red", "white"]
    assert "red, white" in card.system_prompt
    assert 3 <= len(card.probe_prompts) <= 5
    assert "red / white" in card.data_shape
    assert 1 <= len(card.sweep) <= 5
    assert validate_name(card.name) == "wine"
    for config in card.sweep:
        validate_name(card.name + config.suffix)
    text = card.render_markdown()
    assert "classification" in text and card.probe_prompts[0] in text


def test_sweep_is_sized_to_the_data_and_varies_one_knob_at_a_time():
    small, _ = sweep_for(20)
    large, _ = sweep_for(5000)
    assert small.epochs > large.epochs
    _, configs = sweep_for(100, max_runs=5)
    assert len(configs) == 5 and configs[0].suffix == ""
    for config in configs[1:]:
        changed = [k for k in ("epochs", "learning_rate", "r") if getattr(config, k) is not None]
        assert len(changed) == 1
