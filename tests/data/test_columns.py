"""A person's own table, as it comes: which columns hold the inputs and the answers (a guess
from names and content, :mod:`backend.data.columns`), the doctor reading the chosen columns of
a CSV or a JSONL file, the page's and the CLI's words for choosing them, and the labels'
counts and balance."""

from __future__ import annotations

import json

import pytest

from backend.data.columns import (IMPORT_COLUMNS_LABEL, INPUT_COLUMN_LABEL, OUTPUT_COLUMN_LABEL, choose_on_page,
                                  label_balance, looks_like_labels, preview_columns, resolve_columns)
from backend.data.doctor import check_files, import_files
from backend.errors import DataError
from backend.words import counted
from tests.builders import write_support_emails
from tests.data.files import jsonl, write

LONG = ["The parcel arrived two weeks late and the box was crushed on one side.",
        "Great sound, the battery lasts all day and it pairs with my phone at once.",
        "It stopped charging after a month; support never answered my emails.",
        "Comfortable, light, and the colour is exactly as shown on the page."]


def _csv(tmp_path, name: str, header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    import csv

    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _reviews(n: int = 24) -> list[tuple[str, str]]:
    return [(f"{LONG[i % 4]} (order {i})", "negative" if i % 4 in (0, 2) else "positive") for i in range(n)]


@pytest.mark.parametrize("header, flip", [
    (("email", "label"), False), (("review", "sentiment"), False), (("text", "category"), False),
    (("body", "class"), False), (("message", "kind"), False), (("col_a", "col_b"), False),
    (("label", "text"), True), (("sentiment", "review"), True), (("b", "a"), True), (("이메일", "라벨"), False),
])
def test_the_short_few_valued_column_is_the_answer_and_the_long_varied_one_the_input(tmp_path, header, flip):
    rows = [(text, label) for text, label in _reviews()]
    rows = [(label, text) for text, label in rows] if flip else rows
    guess = preview_columns(_csv(tmp_path, "own.csv", header, rows))
    text_column, label_column = (header[1], header[0]) if flip else header
    assert guess.kind == "table" and guess.columns == list(header)
    assert (guess.input, guess.output) == (text_column, label_column)
    assert "looks like the answer" in " ".join(guess.why) or guess.named == (text_column, label_column)
    assert len(guess.rows) == 5 and guess.rows[0][text_column].startswith("The parcel arrived")


@pytest.mark.parametrize("header", [("email", "label"), ("review", "sentiment"), ("text", "category")])
def test_columns_without_known_names_wait_for_a_choice(tmp_path, header):
    guess = preview_columns(_csv(tmp_path, "own.csv", header, _reviews()))
    assert guess.needs_choice and guess.named is None


@pytest.mark.parametrize("header", [("question", "answer"), ("input", "output"), ("prompt", "completion"),
                                    ("text", "label"), ("query", "response")])
def test_known_names_rank_first_and_are_read_without_a_choice(tmp_path, header):
    # long answers (not labels), so only the names can tell
    rows = [(f"Question {i}: what is {i} plus {i}?", f"{i} plus {i} is {2 * i}, since adding a number to itself "
             "doubles it.") for i in range(12)]
    guess = preview_columns(_csv(tmp_path, "qa.csv", header, rows))
    assert (guess.input, guess.output) == header and guess.named == header and not guess.needs_choice


def test_an_id_column_is_neither_and_jsonl_of_plain_fields_is_a_table(tmp_path):
    rows = [{"id": i, "text": f"{LONG[i % 4]} ({i})", "category": ["sports", "business"][i % 2]} for i in range(20)]
    path = write(tmp_path, "news.jsonl", jsonl(*rows))
    guess = preview_columns(path)
    assert guess.kind == "table" and guess.columns == ["id", "text", "category"]
    assert (guess.input, guess.output) == ("text", "category") and guess.needs_choice
    assert guess.described["id"] == "an id" and guess.described["category"] == "2 labels"


def test_chat_records_and_text_have_nothing_to_pick(tmp_path):
    chat = write(tmp_path, "chat.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"},
                                                             {"role": "assistant", "content": "hello"}]}))
    assert preview_columns(chat).kind == "records"
    assert preview_columns(write(tmp_path, "style.txt", "One paragraph.\n\nAnother.")).kind == "text"
    assert preview_columns(write(tmp_path, "t.jsonl", jsonl({"text": "a"}, {"text": "b"}))).kind == "text"
    assert preview_columns(write(tmp_path, "empty.csv", "")).kind == "unknown"


def test_the_chosen_columns_are_checked_against_the_file(tmp_path):
    guess = preview_columns(write_support_emails(tmp_path))
    columns, question = resolve_columns(guess, None, None, choose_on_page)
    assert columns == {} and "which hold the inputs and which the answers" in question
    assert "My guess: 'email' is the input and 'label' the answer" in question
    assert "use email as the input and label as the answer" in question and "--input-column" not in question
    assert resolve_columns(guess, "EMAIL", None, choose_on_page) == (
        {"input_column": "email", "output_column": "label"}, "")  # any case; the other one guessed
    assert "has no column 'body'; its columns are 'email', 'label'" in resolve_columns(
        guess, "body", "label", choose_on_page)[1]
    assert "two different columns" in resolve_columns(guess, "label", "label", choose_on_page)[1]


# --- the doctor reads the chosen columns ----------------------------------------------------------------


def test_a_csv_with_other_names_is_refused_until_its_columns_are_chosen(tmp_path):
    path = write_support_emails(tmp_path)
    refused = check_files([path])
    assert [p.code for p in refused.errors][:1] == ["csv_missing_columns"]
    assert "--input-column / --output-column" in refused.errors[0].message  # the CLI's words by default
    report = check_files([path], input_column="email", output_column="label")
    assert report.ok and len(report.examples) == 48
    assert report.examples[0].messages[-1]["content"] == "billing"


def test_on_the_page_the_missing_columns_error_names_the_pages_controls(tmp_path):
    path = write_support_emails(tmp_path)
    message = check_files([path], column_hint=choose_on_page()).errors[0].message
    for label in (INPUT_COLUMN_LABEL, OUTPUT_COLUMN_LABEL, IMPORT_COLUMNS_LABEL):
        assert label in message
    assert "--input-column" not in message and "input_column=" not in message


def test_jsonl_records_are_read_by_the_chosen_fields(tmp_path):
    rows = [{"review": text, "stars": label, "lang": "en"} for text, label in
            [(LONG[0], 1), (LONG[1], 5), (LONG[2], 1), (LONG[3], 5)]]
    path = write(tmp_path, "reviews.jsonl", jsonl(*rows))
    assert check_files([path], min_examples=1).errors[0].code == "unknown_format"
    report = check_files([path], input_column="review", output_column="stars", min_examples=1)
    assert report.ok and report.formats == {"reviews.jsonl": "fields"}
    assert [e.messages[-1]["content"] for e in report.examples] == ["1", "5", "1", "5"]  # numbers as text
    missing = write(tmp_path, "gap.jsonl", jsonl({"review": "fine", "stars": 3}, {"review": "no stars"}))
    problems = check_files([missing], input_column="review", output_column="stars", min_examples=1).errors
    assert [(p.code, p.line, p.field) for p in problems] == [("missing_field", 2, "stars")]


def test_a_half_valid_upload_imports_nothing(tmp_path):
    path = write_support_emails(tmp_path)
    text = path.read_text(encoding="utf-8").splitlines()
    text[5] = text[5].rsplit(",", 1)[0] + ","  # row 5 loses its label
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    uploads = tmp_path / "uploads"
    with pytest.raises(DataError, match="1 error, so nothing was imported") as refused:
        import_files([path], uploads, input_column="email", output_column="label")
    assert [(p.code, p.line, p.field) for p in refused.value.report.errors] == [("empty_text", 6, "label")]
    assert not uploads.exists() or not any(uploads.iterdir())


# --- the labels ----------------------------------------------------------------------------------------


def test_label_counts_and_a_plain_word_on_imbalance(tmp_path):
    balanced = label_balance(["billing"] * 16 + ["bug"] * 16 + ["other"] * 16)
    assert balanced.counts == {"billing": 16, "bug": 16, "other": 16} and not balanced.imbalanced
    assert balanced.text().startswith("Labels: billing 16 · bug 16 · other 16 (balanced")
    leaning = label_balance(["billing"] * 30 + ["bug"] * 12 + ["other"] * 6)
    assert leaning.imbalanced and leaning.ratio == 5
    assert ("Out of balance: 'billing' has 5× the examples of 'other', so the adapter may lean towards 'billing'. "
            "Add examples of 'other'") in leaning.text()
    assert not label_balance(["billing"] * 4 + ["bug"] * 2).imbalanced  # 2× is not out of balance
    assert label_balance(["billing"] * 6 + ["bug"] * 2).imbalanced  # 3× is
    assert label_balance([f"a long free answer number {i}" for i in range(20)]) is None
    assert not looks_like_labels(["red", "white"])  # each seen once: not labels yet

    report = check_files([write_support_emails(tmp_path, {"billing": 30, "bug": 12, "other": 6})],
                         input_column="email", output_column="label")
    assert report.stats["labels"]["counts"] == {"billing": 30, "bug": 12, "other": 6}
    assert report.stats["labels"]["imbalanced"] and "Out of balance" in report.render_text()
    assert json.loads(json.dumps(report.to_dict()))["stats"]["labels"]["ratio"] == 5


def test_counts_say_one_problem_not_one_problem_s(tmp_path):
    assert [counted(n, "error") for n in (0, 1, 2)] == ["0 errors", "1 error", "2 errors"]
    bad = write(tmp_path, "bad.jsonl", jsonl({"messages": []}))
    text = check_files([bad]).render_text()
    assert "Data check of 1 file: 0 usable examples, 2 errors, 0 warnings" in text and "(s)" not in text
