"""Goal -> plan card, in English and Korean; sweeps that vary one knob at a time."""

from __future__ import annotations

import pytest

from backend.errors import ConfigError
from backend.hparams import RunSpec
from backend.names import validate_name
from backend.training.plan import detect_kind, extract_labels, make_plan, make_sweep, suggest_sweep, sweep_for


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


def test_sweep_varies_one_knob_at_a_time():
    base = RunSpec(name="autumn")
    specs = make_sweep(base, epochs=[2], learning_rate=[1e-4], r=[16])
    assert [s.name for s in specs] == ["autumn", "autumn-e2", "autumn-lr1e-4", "autumn-r16"]
    assert specs[1].train.epochs == 2 and specs[1].lora == base.lora
    assert specs[2].train.learning_rate == 1e-4 and specs[2].train.epochs == base.train.epochs
    assert specs[3].lora.r == 16 and specs[3].lora.alpha / specs[3].lora.r == base.lora.alpha / base.lora.r
    assert make_sweep(base, epochs=[base.train.epochs]) == [base]
    with pytest.raises(ConfigError, match="at most 5"):
        make_sweep(base, epochs=[1, 2, 4, 5, 6])


def test_suggested_sweep_gives_tiny_data_more_epochs():
    small, large = suggest_sweep(20), suggest_sweep(20000)
    assert 1 <= len(small) + 1 <= 5 and 1 <= len(large) + 1 <= 5
    most_epochs = lambda vs: max((v["epochs"] for v in vs if "epochs" in v), default=0)  # noqa: E731
    assert most_epochs(small) > most_epochs(large)
    assert all(len(make_sweep(RunSpec(name="x"), **{k: [v] for k, v in var.items()})) == 2 for var in small)
