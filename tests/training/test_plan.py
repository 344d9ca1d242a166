"""Goal -> plan card, in English and Korean; sweeps that vary one knob at a time."""

from __future__ import annotations

import pytest

from backend.errors import ConfigError
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.names import validate_name
from backend.training.defaults import MAX_EPOCHS, MIN_EPOCHS, choose, settled_loss
from backend.training.plan import (DataFacts, detect_kind, extract_labels, kind_of_answers, labels_of, make_plan,
                                   make_sweep, suggest_sweep, sweep_specs, task_of)


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


def test_sweep_runs_differ_from_the_default_and_from_each_other():
    card = make_plan("sort emails into billing / bug / other", n_examples=100, max_runs=5)
    configs = card.sweep
    assert len(configs) == 5 and configs[0].suffix == "" and "default" in configs[0].note
    seen = {("r", card.lora.r), ("learning_rate", card.train.learning_rate)}
    for config in configs[1:]:
        (knob, value), = config.variation().items()  # one knob each
        assert (knob, value) not in seen, f"{config.suffix} repeats the default or another run"
        seen.add((knob, value))
    specs = sweep_specs(RunSpec(name="x", lora=card.lora, train=card.train), [c.variation() for c in configs[1:]])
    assert len({(s.lora.r, s.train.learning_rate) for s in specs}) == 5


def test_a_cpu_plan_proposes_one_run_unless_asked():
    assert len(make_plan("write with an autumn mood", n_examples=80).sweep) == 1
    assert len(make_plan("write with an autumn mood", n_examples=80, max_runs=3).sweep) == 3


def test_defaults_are_chosen_from_the_data():
    small, large = choose(60), choose(5000)
    assert small.train.batch_size < large.train.batch_size
    assert small.train.epochs >= large.train.epochs and MIN_EPOCHS <= large.train.epochs <= MAX_EPOCHS
    # one rate for short and long answers: 2e-4 for long ones learned less per step (bench/quality_curve.py)
    assert choose(60, mean_answer_tokens=400).train.learning_rate == choose(60, mean_answer_tokens=3).train.learning_rate
    assert "learned more than 2e-4" in choose(60, mean_answer_tokens=400).why["learning rate"]
    for defaults in (small, large):
        assert defaults.train.early_stopping and defaults.train.time_budget_s
        assert defaults.train.settled_loss == settled_loss(None) == 0.005
        assert "reaches 0.005 per answer token" in defaults.why["stopping"]
        assert set(defaults.why) == {"rank", "learning rate", "batch", "noise", "stopping"}
        assert defaults.train.neftune_noise_alpha == 5
    assert choose(60, gpu=True).train.time_budget_s > choose(60).train.time_budget_s
    # the same certainty per whole answer: a 23-token answer is held to a lower loss per token
    extraction = choose(96, mean_answer_tokens=23).train.settled_loss
    assert extraction == settled_loss(23) and abs(extraction * 23 - settled_loss(4) * 4) < 1e-5


def _row(text, answer):
    return [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


def test_probes_are_real_prompts_drawn_from_held_out_rows():
    before = make_plan("classify these texts", n_examples=0)
    assert before.probe_prompts == [] and "held-out rows once data is imported" in before.render_markdown()
    assert not any("ambiguous example" in p for p in make_plan("classify x as a or b").probe_prompts)
    held_out = [_row("a short one", "billing"), _row("another billing case, a bit longer", "billing"),
                _row("the app crashes", "bug"), _row("where is my parcel?", "shipping"),
                _row("a much longer shipping question about a parcel that never came at all", "shipping")]
    data = DataFacts(train_rows=80, eval_rows=5, held_out=held_out, note="held back")
    card = make_plan("classify tickets", data=data)
    assert card.probe_prompts[:3] == ["a short one", "the app crashes", "where is my parcel?"]  # one per label
    assert set(card.probe_prompts) <= {m[0]["content"] for m in held_out} and len(card.probe_prompts) == 4
    assert "5 rows held back" in card.render_markdown()


def test_the_task_and_labels_come_from_the_data_when_the_goal_does_not_say():
    rows = [_row(f"text {i}", label) for i, label in enumerate(["red", "white", "red", "rose"] * 5)]
    assert kind_of_answers(rows) == "classification" and labels_of(rows) == ["red", "rose", "white"]
    card = make_plan("my wine data", data=DataFacts(train_rows=20, answers_kind="classification",
                                                   labels=labels_of(rows)))
    assert card.kind == "classification" and "red, rose, white" in card.system_prompt
    json_rows = [_row("x", '{"a": 1}'), _row("y", '{"a": 2}')]
    assert kind_of_answers(json_rows) == "extraction" and task_of("", json_rows) == "extraction"
    assert task_of("write with an autumn mood", rows) == "style" and task_of("", [_row("x", "a long answer here ok")]) == "style"


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


def test_suggested_sweep_never_repeats_the_base():
    base = RunSpec(name="x", lora=LoraSpec(r=16, alpha=32), train=TrainSpec(learning_rate=5e-4))
    variations = suggest_sweep(base, max_runs=3)
    assert len(variations) == 2
    specs = sweep_specs(base, variations)
    assert len({(s.lora.r, s.train.learning_rate) for s in specs}) == 3


# --- a Korean goal gets a Korean plan -----------------------------------------------------------


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


@pytest.mark.parametrize("goal, kind", [
    ("고객 문의 메일을 청구, 버그, 기타로 분류해 줘", "classification"),
    ("뉴스 기사를 세 문장으로 요약해 줘", "summarization"),
    ("제품 설명에서 가격과 무게를 추출해 줘", "extraction"),
    ("친근한 말투로 답해 줘", "style"),
    ("가을 분위기로 써 줘", "style"),
    ("셰익스피어 문체로 써 줘", "style"),
    ("리뷰가 긍정인지 부정인지 알려 줘", "sentiment"),
    ("summarize meeting notes in two sentences", "summarization"),
])
def test_the_task_is_recognised_from_korean_words(goal, kind):
    assert detect_kind(goal) == kind and make_plan(goal).kind == kind


@pytest.mark.parametrize("goal", ["고객 문의 메일을 청구, 버그, 기타로 분류해 줘", "뉴스 기사를 세 문장으로 요약해 줘",
                                  "제품 설명에서 가격과 무게를 추출해 줘", "친근한 말투로 답해 줘", "가을 분위기로 써 줘",
                                  "리뷰가 긍정인지 부정인지 알려 줘", "친절한 고객센터 챗봇을 만들어 줘"])
def test_a_korean_goal_gets_a_korean_system_prompt_and_korean_probes(goal):
    card = make_plan(goal)
    assert _hangul(card.system_prompt), card.system_prompt
    assert card.probe_prompts and all(_hangul(p) for p in card.probe_prompts)
    validate_name(card.name)


def test_an_autumn_mood_in_korean_is_a_style_adapter_named_for_the_goal():
    card = make_plan("가을 분위기로 써 줘")
    assert card.kind == "style" and card.name == "autumn-mood"
    assert card.system_prompt == "가을 분위기로 글을 쓰세요."  # the style, not the request pasted in
    assert "써 줘" not in card.system_prompt and "style" != card.name
    labelled = make_plan("고객 문의 메일을 청구, 버그, 기타로 분류해 줘")
    assert labelled.labels == ["청구", "버그", "기타"] and labelled.name == "customer-inquiry-email"
    assert labelled.system_prompt == "입력을 분류하세요. 다음 라벨 중 하나로만 답하세요: 청구, 버그, 기타."


def test_english_goals_keep_their_english_plan():
    card = make_plan("make it write with an autumn mood")
    assert card.system_prompt == "You write with this style: write with an autumn mood."
    assert card.probe_prompts[0] == "Describe a walk in the park." and card.name == "autumn-mood"
    assert make_plan("sort these support emails into billing / bugs / other").name == "support-emails"
    assert make_plan("summarize meeting notes").name == "meeting-notes"
