"""bench/preference.py's pure parts (bench/preference_tasks.py) on fixed strings: the rater,
the held-out scoring and the paired sign test. The training the bench runs is not run here."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO_ROOT


def _load():
    spec = importlib.util.spec_from_file_location("preference_tasks", REPO_ROOT / "bench" / "preference_tasks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("preference_tasks", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tasks = _load()
CHERRY = tasks.Item("colours", "a cherry", ("red",))
HOT = tasks.Item("opposites", "hot", ("cold",), skip=("hot",))
ELEPHANT = next(i for i in tasks.colour_items() if i.subject == "an elephant")


@pytest.mark.parametrize("answer, follows", [("Red.", True), ("Dark red.", True), ("red", True),
                                             ("It is red.", False), ("", False), ("...", False),
                                             ("The colour of a cherry is red, as most people would say.", False)])
def test_the_format_is_one_or_two_words(answer, follows):
    assert tasks.follows_format(answer) is follows


@pytest.mark.parametrize("item, answer, right", [
    (CHERRY, "Red.", True), (CHERRY, "Green.", False), (CHERRY, "The colour of a cherry is red.", True),
    (CHERRY, "A cherry is a fruit.", False),  # no colour named: not right
    (CHERRY, "Blue, or maybe red.", False),  # the first colour named counts
    (HOT, "Cold.", True), (HOT, "The opposite of hot is cold.", True),  # the question's own word is passed over
    (HOT, "Hot.", False), (HOT, "The opposite of hot is warm.", False),
    (ELEPHANT, "Gray.", True), (ELEPHANT, "Grey.", True),
])
def test_right_is_the_first_answer_word_of_the_family(item, answer, right):
    assert tasks.is_right(answer, item) is right


def test_the_rater_likes_only_answers_in_the_format_that_are_right():
    assert tasks.rate("Red.", CHERRY) == 1
    assert tasks.rate("Green.", CHERRY) == -1  # the format, but wrong
    assert tasks.rate("The colour of a cherry is red.", CHERRY) == -1  # right, but not the format


def test_the_splits_keep_held_out_questions_apart_and_the_sft_data_rarely_shows_the_format():
    train, vote, held = tasks.split_items()
    assert not {i.prompt for i in held} & {i.prompt for i in train + vote}
    assert {i.prompt for i in vote} <= {i.prompt for i in train}
    assert len(held) >= 60 and {i.family for i in held} == {"colours", "opposites"}
    assert not any(i.family == "opposites" for i in train)
    rows = tasks.sft_rows(train)
    share = sum(tasks.follows_format(r["messages"][1]["content"]) for r in rows) / len(rows)
    assert 0.15 <= share <= 0.35  # rare: the parent sits well below the ceiling
    assert all(tasks.is_right(r["messages"][1]["content"], i) for r, i in zip(rows, train))  # the data is right


def test_held_out_scores_count_each_outcome_with_its_interval_and_per_family():
    items = [CHERRY, CHERRY, HOT, HOT]
    figures = tasks.score_answers(["Red.", "The colour of a cherry is red.", "Hot.", "Cold."], items)
    assert figures["all"]["follows_format"]["correct"] == 3 and figures["all"]["follows_format"]["total"] == 4
    assert figures["all"]["right_answer"]["correct"] == 3
    assert figures["all"]["preferred"]["correct"] == 2
    assert figures["opposites"]["preferred"] == {"correct": 1, "total": 2, "score": 0.5,
                                                 "ci95": figures["opposites"]["preferred"]["ci95"]}
    lo, hi = figures["all"]["preferred"]["ci95"]
    assert 0 < lo < 0.5 < hi < 1
    with pytest.raises(ValueError):
        tasks.score_answers(["Red."], items)


def test_the_arms_are_compared_on_each_outcome_with_the_paired_test():
    tests = tasks.compare_arms(["The colour of a cherry is red.", "Hot."], ["Red.", "Cold."], [CHERRY, HOT])
    assert tests["follows_format"]["only_second"] == 1 and tests["follows_format"]["both"] == 1
    assert tests["right_answer"]["only_second"] == 1 and tests["preferred"]["only_second"] == 2


def test_the_verdict_says_helped_only_when_liked_answers_rise_without_losing_right_ones():
    def tests(liked, right):
        return {"preferred": tasks.paired(*liked), "right_answer": tasks.paired(*right)}

    up = ([False] * 10, [True] * 10)  # the round gets 10 more liked answers: p = 0.002
    same = ([True, False] * 5, [False, True] * 5)  # 5 each way: p = 1
    down = ([True] * 10, [False] * 10)
    assert tasks.verdict(tests(up, same))["helped"] is True
    assert tasks.verdict(tests(up, same))["said"].startswith("helped")
    assert tasks.verdict(tests(up, down))["helped"] is False
    assert tasks.verdict(tests(up, down))["said"].startswith("mixed")
    assert tasks.verdict(tests(same, same))["said"].startswith("no effect shown")
    assert tasks.verdict(tests(down, down))["said"].startswith("hurt")
