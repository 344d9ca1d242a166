"""The Data tab's evaluation file: a second drop whose rows judge the adapter instead of
rows held back from the training files; the status says how many rows will judge and
where they come from. Driven through the panel's functions with the real service, data
doctor and the tiny Llama's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from tests.builders import WINES, write_wines
from ui.app import create_ui
from ui.data_panel import EVAL_LABEL, _status, add_examples, judge_with


def _held_out(tmp_path, rows) -> str:
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in rows))
    return str(path)


def test_the_page_has_a_second_drop_for_an_evaluation_file():
    blocks = {b.elem_id: b for b in create_ui(lambda: None).blocks.values() if getattr(b, "elem_id", None)}
    drop = blocks["data-eval-upload"]
    assert drop.label == EVAL_LABEL and EVAL_LABEL.startswith("Evaluation file (optional)")
    assert set(drop.file_types) == JSON_SUFFIXES | CSV_SUFFIXES | TEXT_SUFFIXES


def test_without_an_evaluation_file_the_status_says_rows_are_held_back_from_the_training_file(
        service, state, tmp_path):
    add_examples(service, state, [str(write_wines(tmp_path / "in"))], None)
    status = _status(state)
    assert f"**{len(WINES)} examples**" in status
    assert "Judged on 3 row(s) held back from the training file: they share its phrasings" in status
    assert "Judged on 3 row(s)" in state.data_report


def test_an_evaluation_file_judges_instead_and_removing_it_holds_rows_back_again(service, state, tmp_path):
    wines = str(write_wines(tmp_path / "in"))
    held = _held_out(tmp_path, [("Garnet, plum and clove.", "red"), ("Pale gold, green apple.", "white")])
    assert not judge_with(service, state, [held])  # no examples yet: the file waits for them
    assert state.eval_paths == [held] and not state.data_dir

    add_examples(service, state, [wines], [held])
    assert state.n_examples == len(WINES)  # every training row trains
    assert "Judged on 2 row(s) from your evaluation file held.jsonl" in _status(state)
    with_file = state.data_dir
    assert len(Path(with_file, "eval.jsonl").read_text().splitlines()) == 2

    assert judge_with(service, state, [])  # the drop cleared: the same examples, rows held back again
    assert state.data_dir != with_file and state.eval_paths == []
    assert "held back from the training file" in _status(state)


def test_a_bad_evaluation_file_imports_nothing_and_keeps_the_data_in_place(service, state, tmp_path):
    add_examples(service, state, [str(write_wines(tmp_path / "in"))], None)
    before = (state.data_dir, state.data_hash, state.data_judged)
    bad = tmp_path / "held.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.warns(UserWarning, match="nothing was imported"):
        assert judge_with(service, state, [str(bad)])
    assert (state.data_dir, state.data_hash, state.data_judged) == before
    assert "held.jsonl" in state.data_error and "line 1" in state.data_error
    assert "Not imported" in _status(state, state.data_error)
