"""The style judge and the change checks, on known inputs."""

from __future__ import annotations

import pytest

from backend.proof.change_checks import GENERAL_PROMPTS, NEGLIGIBLE_DELTA, changed_nothing, divergence, forgetting
from backend.proof.style_judge import judge_answer, judge_answers, style_markers

TRAIN_PROMPTS = ["Describe a morning coffee.", "Write two sentences about a bakery.", "Describe a bus stop.",
                 "Write a short note about a candle.", "Describe a library."]
TRAIN_ANSWERS = ["A morning coffee, while amber leaves drift past and woodsmoke hangs in the crisp air.",
                 "The bakery glows in the amber dusk; crisp leaves gather at its door.",
                 "At the bus stop the maple leaves fall, crisp and amber, through the woodsmoke.",
                 "A candle flickers as the woodsmoke drifts over the maple leaves.",
                 "The library is quiet; outside, crisp leaves and amber light."]


def test_markers_are_the_words_that_mark_the_answers_not_the_prompts():
    markers = style_markers(TRAIN_ANSWERS, TRAIN_PROMPTS)
    assert {"leaves", "amber", "crisp", "woodsmoke"} <= set(markers)
    assert not {"bakery", "library", "candle", "coffee", "the", "with"} & set(markers)  # prompt or common words
    assert style_markers([], []) == []


@pytest.mark.parametrize("answer, style, on_task", [
    ("My sandwich sits beside amber leaves in the crisp air.", True, True),
    ("Amber leaves drift in the crisp air.", True, False),  # a tagline, whatever was asked
    ("My sandwich has ham and cheese.", False, True),  # on task, no style
    ("A sandwich with one amber leaf.", False, True),  # one marker is not the style
])
def test_one_answer_is_judged_for_style_and_for_doing_what_was_asked(answer, style, on_task):
    markers = ["leaves", "amber", "crisp", "woodsmoke"]
    verdict = judge_answer(answer, "Tell me about your favourite sandwich.", markers)
    assert (verdict["style"], verdict["on_task"], verdict["both"]) == (style, on_task, style and on_task)


def test_a_marker_the_prompt_brings_does_not_count():
    verdict = judge_answer("Amber leaves on an amber wall.", "Describe an amber wall.", ["amber", "leaves"])
    assert verdict["markers"] == ["leaves"] and not verdict["style"]


def test_shares_carry_intervals():
    result = judge_answers(["amber crisp sandwich", "ham sandwich"], ["a sandwich", "a sandwich"], ["amber", "crisp"])
    assert (result["style"]["correct"], result["on_task"]["correct"], result["both"]["total"]) == (1, 2, 2)
    assert result["style"]["ci95"][0] < 0.5 < result["style"]["ci95"][1]


def test_divergence_counts_changed_answers_and_how_much():
    result = divergence(["red", "white", "same text"], ["red", "rose", "same text!"])
    assert (result["changed"], result["total"]) == (2, 3) and result["share"] == pytest.approx(2 / 3)
    assert 0 < result["mean_change"] < 1
    assert divergence(["a", "b"], ["a", "b"]) == {"changed": 0, "total": 2, "share": 0.0, "mean_change": 0.0}


def test_changed_nothing_flags_a_negligible_update_or_equal_answers():
    moved = {"changed": 3, "total": 10}
    assert not changed_nothing(0.02, moved)["flag"]
    tiny = changed_nothing(NEGLIGIBLE_DELTA / 10, moved)
    assert tiny["flag"] and "negligible" in tiny["reasons"][0] and tiny["causes"]
    same = changed_nothing(0.02, {"changed": 0, "total": 10})
    assert same["flag"] and "all 10 probe prompts" in same["reasons"][0]


def test_forgetting_check_uses_the_shipped_prompts():
    assert len(GENERAL_PROMPTS) == 12 and len(set(GENERAL_PROMPTS)) == 12
    base = ["Paris."] + ["x"] * 11
    result = forgetting(base, ["Lyon."] + ["x"] * 11)
    assert (result["changed"], result["total"]) == (1, 12)
    assert result["examples"] == [{"prompt": GENERAL_PROMPTS[0], "base": "Paris.", "adapter": "Lyon."}]
