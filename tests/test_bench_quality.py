"""The scoring bench/quality.py and bench/quality_curve.py share: the unseen rows as the
adapter is asked them, and an answer judged right the same way in both (nothing loaded)."""

from __future__ import annotations

from bench import quality, quality_curve
from bench.quality import tasks


def test_unseen_rows_go_behind_the_runs_system_prompt():
    task = tasks.build("triage")
    rows = quality.unseen_rows(task, "Classify.")
    assert len(rows) == len(task["unseen"]) == 30
    assert rows[0]["messages"][0] == {"role": "system", "content": "Classify."}
    assert rows[0]["messages"][1:] == task["unseen"][0]["messages"]
    assert quality.unseen_rows(task, None)[0]["messages"] == task["unseen"][0]["messages"]
    assert (quality.answer_tokens("style"), quality.answer_tokens("extraction")) == (96, 48)


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
    judgements = quality.style_judgements(autumn, answers)
    assert len(judgements) == 30 and not any(j["ok"] for j in judgements[1:])
    assert quality_curve.judged(autumn, answers)["correct"] == sum(j["ok"] for j in judgements)
