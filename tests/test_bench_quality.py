"""The scoring bench/quality.py and bench/quality_curve.py share: the unseen rows as the
adapter is asked them, and an answer judged right the same way in both (nothing loaded)."""

from __future__ import annotations

import pytest

from bench import quality, quality_curve
from bench.quality import tasks


def test_unseen_rows_go_behind_the_runs_system_prompt():
    task = tasks.build("triage")
    rows = quality.unseen_rows(task, "Classify.")
    assert len(rows) == len(task["unseen"]) == 30
    assert rows[0]["messages"][0] == {"role": "system", "content": "Classify."}
    assert rows[0]["messages"][1:] == task["unseen"][0]["messages"]
    assert quality.unseen_rows(task, None)[0]["messages"] == task["unseen"][0]["messages"]
    budgets = {name: quality.answer_tokens(tasks.build(name)) for name in ("autumn", "orders", "listings")}
    assert budgets == {"autumn": 96, "orders": 48, "listings": 224}


def test_both_benches_count_an_answer_right_the_same_way():
    for name in ("triage", "orders"):
        task = tasks.build(name)
        references = [r["messages"][-1]["content"] for r in task["unseen"]]
        answers = [references[0], "no idea", *references[2:]]
        assert quality.matches(task, answers) == [True, False] + [True] * (len(references) - 2)
        curve = quality_curve.judged(task, answers)
        assert (curve["correct"], curve["total"]) == (len(references) - 1, len(references))
    autumn = tasks.build("autumn")
    answers = ["The maple leaves fall, crisp and amber, over my sandwich."] + ["Fine."] * 29
    judgements = quality.judgements(autumn, answers)
    assert len(judgements) == 30 and not any(j["ok"] for j in judgements[1:])
    assert quality_curve.judged(autumn, answers)["correct"] == sum(j["ok"] for j in judgements)


def test_a_listing_is_right_only_in_the_house_format_with_the_facts_given_in_order():
    listings = tasks.build("listings")
    row = listings["unseen"][0]
    name, facts = row["judge"]["name"], row["judge"]["facts"]
    reference = row["messages"][-1]["content"]
    assert reference.startswith(name + "\n") and all(f"- {f}" in reference for f in facts)
    assert tasks.judge(listings, row, reference) == {"format": True, "facts": True, "ok": True}
    swapped = reference.replace(f"- {facts[0]}", "- @").replace(f"- {facts[1]}", f"- {facts[0]}").replace(
        "- @", f"- {facts[1]}")
    assert tasks.judge(listings, row, swapped) == {"format": True, "facts": False, "ok": False}
    run_on = reference + "\n" + tasks.LISTING_CLOSING  # the closing said twice: generation did not stop
    assert tasks.judge(listings, row, run_on)["format"] is False
    assert tasks.judge(listings, row, reference.split("\n", 1)[1])["format"] is False  # no heading
    same_ask = sum(r["judge"] == row["judge"] for r in listings["unseen"])  # this product, these facts
    assert quality_curve.judged(listings, [reference] * len(listings["unseen"]))["correct"] == same_ask < 3


def test_the_held_out_tasks_use_words_and_items_the_training_file_never_shows():
    for name in tasks.HELD_OUT_TASKS:
        task = tasks.build(name)
        train = " ".join(m["content"] for r in task["train"] for m in r["messages"])
        unseen_prompts = [r["messages"][0]["content"] for r in task["unseen"]]
        assert not set(unseen_prompts) & {r["messages"][0]["content"] for r in task["train"]}
        if name == "listings":
            assert not any(r["judge"]["name"] in train for r in task["unseen"])
        else:  # the reviewed products
            assert not any(p in train for p in ("air fryer", "rice cooker", "yoga mat", "hair dryer", "monitor stand"))
            assert {r["messages"][-1]["content"] for r in task["unseen"]} == {"positive", "negative", "neutral"}


def test_the_unseen_rows_carry_the_paired_test_against_the_stronger_base():
    test = quality.paired_vs([True] * 8 + [False] * 2, [False] * 8 + [True] * 2, "base_few_shot")
    assert (test["against"], test["only_first"], test["only_second"], test["both"]) == ("base_few_shot", 8, 2, 0)
    assert test["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024, abs=1e-3)
    figure = {"correct": 8, "total": 10, "score": 0.8, "ci95": [0.49, 0.94]}
    row = {"task": "t", "kind": "classification", "train_rows": 7, "held_out_rows": 3, "unseen_rows": 10,
           "default_config": {"r": 16, "alpha": 32, "learning_rate": 5e-4, "batch_size": 4, "epochs_ceiling": 7},
           "training": {"train_seconds": 50.0, "stopping": None},
           "unseen": {"base_zero_shot": figure, "base_few_shot": figure, "adapter": figure, "paired_vs_base": test},
           "target": 0.8, "meets_target": True}
    line = quality.summary_table({"tasks": [row]}).splitlines()[-1]
    assert "| only the adapter 8, only the base 2, p = 0.11 | ≥80%: met |" in line
    assert line.count("|") == quality.summary_table({"tasks": []}).splitlines()[0].count("|")  # one cell per column
