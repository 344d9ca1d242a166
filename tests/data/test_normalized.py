"""The one reader of imported data, the one split rule and the prompt/completion form
(backend/data/normalized.py), shared by the data doctor, training and the proof."""

from __future__ import annotations

import json

import pytest

from backend.data.normalized import (
    answer_of,
    check_rows,
    eval_count,
    prompt_of,
    read_rows,
    split_rows,
    to_prompt_completion,
    write_rows,
)
from backend.errors import DataError


def test_rows_become_prompt_completion_with_system_prompt():
    row = to_prompt_completion([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                               system_prompt="Be brief.")
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert row["prompt"][-1]["role"] == "user"
    assert row["completion"] == [{"role": "assistant", "content": "yo"}]


def test_bad_rows_reported_together(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}]}\nnot json\n'
                    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    with pytest.raises(DataError) as err:
        read_rows(path)
    assert "line 1" in err.value.message and "line 2" in err.value.message
    assert len(err.value.report) == 2
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "missing.jsonl")


def test_split_is_deterministic_and_skips_tiny_data():
    rows = list(range(20))
    train, held = split_rows(rows, eval_fraction=0.1, seed=3)
    assert (train, held) == split_rows(rows, eval_fraction=0.1, seed=3)
    assert len(held) == 2 and sorted(train + held) == rows
    assert split_rows(rows[:4], eval_fraction=0.1, seed=3) == (rows[:4], [])


def test_split_holds_out_from_five_rows_on_and_keeps_the_order():
    """The same rule the data doctor applies at import applies to a run given one file."""
    assert split_rows(list(range(4)), eval_fraction=0.5, seed=0) == ([0, 1, 2, 3], [])
    train, held = split_rows(list(range(5)), eval_fraction=0.1, seed=0)
    assert len(held) == 1 and train == sorted(train) and sorted(train + held) == list(range(5))
    assert split_rows(list(range(5)), eval_fraction=0.0, seed=0) == (list(range(5)), [])
    train, held = split_rows(list(range(5)), eval_fraction=0.99, seed=1)
    assert len(train) == 1 and len(held) == 4  # never everything held out


@pytest.mark.parametrize(("n", "held_out"), [
    (0, 0), (4, 0),  # too few to judge on
    (5, 1), (12, 3), (40, 10),  # the floor of 20, lowered so that three quarters still train
    (90, 20), (100, 20),  # 20% would be 18: the floor
    (120, 24), (999, 200),  # 20%
    (1000, 200), (5000, 200),  # the cap
])
def test_the_rule_holds_out_20_percent_at_least_20_rows_where_the_data_allows_at_most_200(n, held_out):
    assert eval_count(n) == held_out
    assert n - held_out >= 0.75 * n or n < 5


def test_the_rule_is_the_default_split_and_an_explicit_fraction_keeps_its_meaning():
    rows = list(range(90))
    train, held = split_rows(rows, seed=7)
    assert len(held) == 20 and len(train) == 70 and sorted(train + held) == rows
    assert split_rows(rows, eval_fraction=None, seed=7) == (train, held)
    assert len(split_rows(rows, eval_fraction=0.1, seed=7)[1]) == 9
    assert split_rows(rows, eval_fraction=0.0, seed=7) == (rows, [])
    assert split_rows(rows[:4], seed=7) == (rows[:4], [])


def test_rows_written_are_read_back_and_in_memory_rows_are_checked_the_same_way(tmp_path):
    rows = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(3)]
    write_rows(tmp_path / "train.jsonl", rows)
    assert read_rows(tmp_path / "train.jsonl") == rows
    assert check_rows([{"messages": r} for r in rows]) == rows == check_rows(rows)
    assert prompt_of(rows[0]) == rows[0][:1] and answer_of(rows[0]) == "a0"
    with pytest.raises(DataError) as err:
        check_rows([rows[0], [{"role": "user", "content": "q"}], {"messages": "x"}], "eval rows")
    assert "row 2" in err.value.message and "row 3" in err.value.message and len(err.value.report) == 2


def test_a_file_without_examples_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no examples"):
        read_rows(tmp_path / "empty.jsonl")
    (tmp_path / "list.jsonl").write_text(json.dumps([1, 2]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        read_rows(tmp_path / "list.jsonl")
