"""The Data tab's evaluation file: a second drop whose rows judge the adapter instead of
rows held back from the training files; the status says how many rows will judge and
where they come from. Driven through the panel's functions with the real service, data
doctor and the tiny Llama's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from backend.studio.tools import IMPORT_COLUMNS_LABEL, INPUT_COLUMN_LABEL, OUTPUT_COLUMN_LABEL
from tests.builders import WINES, write_support_emails, write_wines
from ui.app import create_ui
from ui.data_panel import (EVAL_LABEL, _status, add_examples, columns_note, columns_table, import_with_columns,
                           judge_with, labels_line)


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
    assert "Judged on 3 rows held back from the training file: they share its phrasings" in status
    assert "Judged on 3 rows" in state.data_report


def test_an_evaluation_file_judges_instead_and_removing_it_holds_rows_back_again(service, state, tmp_path):
    wines = str(write_wines(tmp_path / "in"))
    held = _held_out(tmp_path, [("Garnet, plum and clove.", "red"), ("Pale gold, green apple.", "white")])
    assert not judge_with(service, state, [held])  # no examples yet: the file waits for them
    assert state.eval_paths == [held] and not state.data_dir

    add_examples(service, state, [wines], [held])
    assert state.n_examples == len(WINES)  # every training row trains
    assert "Judged on 2 rows from your evaluation file held.jsonl" in _status(state)
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


# --- a table with other column names: preview, pickers, import on confirm, label counts -------------


def test_the_data_tab_has_column_pickers_and_an_import_button_with_stable_ids():
    blocks = {b.elem_id: b for b in create_ui(lambda: None).blocks.values() if getattr(b, "elem_id", None)}
    assert blocks["data-input-column"].label == INPUT_COLUMN_LABEL == "Input column"
    assert blocks["data-output-column"].label == OUTPUT_COLUMN_LABEL == "Answer column"
    assert blocks["data-import-columns"].value == IMPORT_COLUMNS_LABEL == "Import with these columns"
    for elem_id in ("data-columns", "data-columns-note", "data-columns-preview", "data-labels"):
        assert elem_id in blocks


def test_a_dropped_email_label_csv_shows_its_rows_and_the_guess_and_imports_on_confirm(service, state, tmp_path):
    emails = str(write_support_emails(tmp_path / "in"))
    add_examples(service, state, [emails], None)
    assert state.data_dir is None and state.pending_paths == [emails]  # nothing imported yet
    status = _status(state)
    assert "Choose the columns" in status and "Nothing is imported yet" in status and "Not imported" not in status
    table = columns_table(state)
    assert "<th class='tl-col-input' data-column='email'>email <small>(input)</small></th>" in table
    assert "<th class='tl-col-output' data-column='label'>label <small>(answer)</small></th>" in table
    assert table.count("<tr>") == 6  # the header and the first 5 rows
    note = columns_note(state)
    assert "`email` (text, about" in note and "`label` (3 labels)" in note
    assert "Best guess: input **email**, answer **label**" in note
    assert labels_line(state) == ""

    import_with_columns(service, state, "email", "label")
    assert state.n_examples == 48 and state.pending_paths == []
    assert "(input column **email**, answer column **label**)" in _status(state)
    assert "Read with input **email** and answer **label**" in columns_note(state)
    assert labels_line(state).startswith("Labels: billing 16 · bug 16 · other 16 (balanced")


def test_label_imbalance_is_said_plainly(service, state, tmp_path):
    emails = str(write_support_emails(tmp_path / "in", {"billing": 30, "bug": 12, "other": 6}))
    add_examples(service, state, [emails], None)
    import_with_columns(service, state, "email", "label")
    line = labels_line(state)
    assert line.startswith("⚠️ Labels: billing 30 · bug 12 · other 6. Out of balance:")
    assert "&#x27;billing&#x27; has 5× the examples of &#x27;other&#x27;" in line


def test_other_picks_re_import_and_the_evaluation_drop_keeps_the_columns(service, state, tmp_path):
    path = tmp_path / "in" / "tickets.csv"
    path.parent.mkdir(parents=True)
    rows = [(f"Ticket {i}: {'the app crashes on start' if i % 2 else 'I was charged twice'}", "bug" if i % 2 else
             "billing", "high" if i % 3 else "low") for i in range(24)]
    path.write_text("body,topic,priority\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows), encoding="utf-8")
    add_examples(service, state, [str(path)], None)
    assert (state.column_guess["input"], state.column_guess["output"]) == ("body", "topic")
    import_with_columns(service, state, "body", "priority")
    assert state.data_columns == {"input": "body", "output": "priority"}
    assert "high" in labels_line(state) and "bug" not in labels_line(state)
    held = _held_out(tmp_path, [("Ticket 99: it crashes", "high"), ("Ticket 98: refund please", "low")])
    assert judge_with(service, state, [held])  # the same table judged on a file: still read by body/priority
    assert state.data_columns == {"input": "body", "output": "priority"} and state.n_examples == 24


def test_a_half_valid_table_imports_nothing_and_the_error_names_the_pages_controls(service, state, tmp_path):
    add_examples(service, state, [str(write_wines(tmp_path / "old"))], None)
    before = (state.data_dir, state.data_hash)
    emails = write_support_emails(tmp_path / "in")
    lines = emails.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ","  # one row without its label
    emails.write_text("\n".join(lines) + "\n", encoding="utf-8")
    add_examples(service, state, [str(emails)], None)
    with pytest.warns(UserWarning, match="nothing was imported"):
        import_with_columns(service, state, "email", "label")
    assert (state.data_dir, state.data_hash) == before and state.pending_paths == [str(emails)]
    assert "line 4, field 'label'" in state.data_error and "Not imported" in _status(state, state.data_error)

    # a second table without known names beside one with them: the doctor's own words, the page's controls
    good = tmp_path / "in" / "qa.csv"
    good.write_text("question,answer\n" + "".join(f"q{i}?,a{i}\n" for i in range(12)), encoding="utf-8")
    with pytest.warns(UserWarning, match="nothing was imported"):
        add_examples(service, state, [str(good), str(write_support_emails(tmp_path / "more"))], None)
    assert "“Input column” and “Answer column” lists" in state.data_error
    assert "--input-column" not in state.data_error and "input_column=" not in state.data_error
    assert (state.data_dir, state.data_hash) == before


def test_picking_nothing_is_an_error_on_the_page(service, state, tmp_path):
    add_examples(service, state, [str(write_support_emails(tmp_path / "in"))], None)
    with pytest.raises(gr.Error, match="Pick the input column and the answer column first"):
        import_with_columns(service, state, "email", None)
    with pytest.raises(gr.Error, match="has no column 'body'"):
        import_with_columns(service, state, "body", "label")
