"""The data doctor on real files written to tmp_path: one report for several files,
duplicates, counts, the split and hash, token lengths, and the import."""

from __future__ import annotations

import json

import pytest

from backend.data.doctor import chat_token_lengths, check_files, import_files
from backend.data.normalized import read_rows, to_prompt_completion
from backend.errors import DataError
from tests.data.files import A, S, U, chat, jsonl, write


# --- several files, duplicates, counts ---------------------------------------------------------


def test_several_files_one_report_grouped_by_file(tmp_path):
    good = write(tmp_path, "good.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(3)]))
    bad = write(tmp_path, "bad.csv", "text,label\nhello,\n")
    report = check_files([good, bad], min_examples=1)
    assert report.formats == {"good.jsonl": "messages", "bad.csv": "csv"}
    assert [(p.file, p.line, p.field) for p in report.errors] == [("bad.csv", 2, "label")]
    text = report.render_text()
    assert text.index("good.jsonl") < text.index("bad.csv") < text.index("line 2, field 'label'")
    assert "1 error," in text and "(s)" not in text
    json.dumps(report.to_dict())


def test_same_file_names_in_two_folders_are_told_apart(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    one = write(tmp_path / "x", "d.jsonl", jsonl(chat("q", "a")))
    two = write(tmp_path / "y", "d.jsonl", jsonl(chat("q2", "a2")))
    report = check_files([one, two], min_examples=1)
    assert set(report.formats) == {str(one), str(two)}


def test_duplicates_are_warnings_naming_the_first_line(tmp_path):
    first = write(tmp_path, "a.jsonl", jsonl(chat("q", "a"), chat("other", "b"), chat("q", "a")))
    second = write(tmp_path, "b.jsonl", jsonl(chat("x", "y"), chat("q", "a")))
    report = check_files([first, second], min_examples=1)
    assert report.ok
    dups = [p for p in report.warnings if p.code == "duplicate"]
    assert [(p.file, p.line) for p in dups] == [("a.jsonl", 3), ("b.jsonl", 2)]
    assert "line 1" in dups[0].message and "of a.jsonl" not in dups[0].message
    assert "line 1 of a.jsonl" in dups[1].message
    assert report.stats["duplicates"] == 2
    assert len(report.examples) == 5  # warnings import


def test_too_few_examples_is_a_warning_and_none_an_error(tmp_path):
    path = write(tmp_path, "few.jsonl", jsonl(*[chat(f"q{i}", "a") for i in range(3)]))
    report = check_files([path], min_examples=4)
    assert report.ok
    assert [(p.code, p.file, p.line) for p in report.warnings] == [("too_few", None, None)]
    assert "3" in report.warnings[0].message and "4" in report.warnings[0].message
    assert check_files([path], min_examples=3).warnings == []

    broken = write(tmp_path, "none.jsonl", jsonl({"messages": []}))
    report = check_files([broken])
    assert [(p.code, p.file) for p in report.errors] == [("wrong_type", "none.jsonl"), ("no_examples", None)]
    assert "1 problem found" in report.errors[-1].message
    assert [p.code for p in check_files([]).errors] == ["no_examples"]


def test_system_prompt_is_prepended_where_missing(tmp_path):
    path = write(tmp_path, "s.jsonl", jsonl(chat("q", "a"), {"messages": [S("own"), U("q2"), A("a2")]}))
    report = check_files([path], system_prompt="Be kind.", min_examples=1)
    assert report.examples[0].messages == [S("Be kind."), U("q"), A("a")]
    assert report.examples[1].messages == [S("own"), U("q2"), A("a2")]


# --- split and hash ------------------------------------------------------------------------------


def test_split_is_seeded_and_sized(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(30)]))
    one = check_files([path], seed=1, eval_fraction=0.2)
    again = check_files([path], seed=1, eval_fraction=0.2)
    other = check_files([path], seed=2, eval_fraction=0.2)
    assert [e.line for e in one.eval] == [e.line for e in again.eval]
    assert [e.line for e in one.eval] != [e.line for e in other.eval]
    assert len(one.eval) == 6 and len(one.train) == 24
    assert {e.line for e in one.train} | {e.line for e in one.eval} == set(range(1, 31))
    assert (one.stats["train"], one.stats["eval"]) == (24, 6)

    five = write(tmp_path, "five.jsonl", jsonl(*[chat(f"q{i}", "a") for i in range(5)]))
    four = write(tmp_path, "four.jsonl", jsonl(*[chat(f"q{i}", "a") for i in range(4)]))
    assert len(check_files([five], eval_fraction=0.01).eval) == 1
    assert len(check_files([four], eval_fraction=0.5).eval) == 0
    assert len(check_files([five], eval_fraction=0.0).eval) == 0


def test_by_default_the_rule_holds_back_rows_and_the_report_says_they_share_the_file(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(90)]))
    report = check_files([path])
    assert (len(report.train), len(report.eval)) == (70, 20)  # 20% is 18: the floor of 20
    split = report.stats["split"]
    assert (split["eval_rows"], split["eval_source"], split["eval_fraction"]) == (20, "split", None)
    assert split["note"].startswith("held back from the training file: they share its phrasings")
    text = report.render_text()
    assert "held back by the rule: 20%, at least 20 rows where the data allows, at most 200" in text
    assert "Judged on 20 rows held back from the training file" in text
    assert "drop in a separate evaluation file" in text

    four = check_files([write(tmp_path, "four.jsonl", jsonl(*[chat(f"q{i}", "a") for i in range(4)]))],
                       min_examples=1)
    assert four.stats["split"]["eval_rows"] == 0
    assert "Judged on no rows: none held back (fewer than 5 examples)" in four.render_text()


def test_content_hash_is_stable_for_identical_content_in_identical_order(tmp_path):
    rows = [chat(f"q{i}", f"a{i}") for i in range(4)]
    a = check_files([write(tmp_path, "a.jsonl", jsonl(*rows))])
    b = check_files([write(tmp_path, "b.jsonl", jsonl(*rows))])  # other name, same content
    as_csv = check_files([write(tmp_path, "c.csv", "input,output\n" + "".join(f"q{i},a{i}\n" for i in range(4)))])
    reordered = check_files([write(tmp_path, "r.jsonl", jsonl(*reversed(rows)))])
    with_system = check_files([tmp_path / "a.jsonl"], system_prompt="s")
    assert len(a.content_hash) == 64
    assert a.content_hash == b.content_hash == as_csv.content_hash
    assert a.content_hash != reordered.content_hash
    assert a.content_hash != with_system.content_hash


# --- tokens ---------------------------------------------------------------------------------------

def test_token_lengths_under_the_base_tokenizer(tmp_path, tokenizer):
    rows = [chat("Classify the wine: deep ruby with cherry.", "red"),
            chat("Bug report: the app crashes when I click save.", "bugs " * 10),
            {"messages": [S("Be brief."), U("hi"), A("hello there")]}]
    report = check_files([write(tmp_path, "t.jsonl", jsonl(*rows))], tokenizer=tokenizer, min_examples=1)
    expected = []
    answers = []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
        expected.append(len(ids))
        answers.append(len(ids) - len(prompt))
    tokens = report.stats["tokens"]
    assert (tokens["min"], tokens["max"]) == (min(expected), max(expected))
    assert tokens["p50"] == sorted(expected)[1]
    assert tokens["mean"] == round(sum(expected) / 3, 1)
    assert tokens["answer_total"] == sum(answers) and 0 < sum(answers) < sum(expected)
    assert "Tokens per example" in report.render_text()

    lengths, _, failures = chat_token_lengths(tokenizer, [r["messages"] for r in rows])
    assert lengths == expected and failures == [None, None, None]


def test_examples_over_the_limit_are_errors(tmp_path, tokenizer):
    short, long = chat("hi", "yo"), chat("hi", "autumn leaves " * 40)
    path = write(tmp_path, "t.jsonl", jsonl(short, long))
    limit = len(tokenizer.apply_chat_template(short["messages"], tokenize=True, return_dict=False)) + 5
    report = check_files([path], tokenizer=tokenizer, max_tokens=limit, min_examples=1)
    [problem] = report.errors
    assert (problem.code, problem.file, problem.line, problem.field) == ("too_long", "t.jsonl", 2, "messages")
    assert str(limit) in problem.message
    assert report.stats["tokens"]["over_limit"] == 1


def test_a_template_that_refuses_an_example_is_an_error(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    strict = AutoTokenizer.from_pretrained(tiny_llama)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    )
    path = write(tmp_path, "t.jsonl", jsonl(chat("q", "a"), {"messages": [S("s"), U("q"), A("a")]}))
    report = check_files([path], tokenizer=strict, min_examples=1)
    [problem] = report.errors
    assert (problem.code, problem.line, problem.field) == ("template_failed", 2, "messages")
    assert "System role not supported" in problem.message


# --- import -------------------------------------------------------------------------------------


def test_a_half_valid_upload_imports_nothing(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    good = write(tmp_path, "good.jsonl", jsonl(*[chat(f"q{i}", "a") for i in range(12)]))
    bad = write(tmp_path, "bad.jsonl", jsonl(chat("q", "a"), "{oops"))
    with pytest.raises(DataError) as caught:
        import_files([good, bad], uploads)
    assert list(uploads.iterdir()) == []
    report = caught.value.report
    assert [(p.file, p.line, p.code) for p in report.errors] == [("bad.jsonl", 2, "bad_json")]
    assert "bad.jsonl" in str(caught.value) and "nothing was imported" in str(caught.value)


def test_clean_upload_is_written_and_read_back(tmp_path):
    uploads = tmp_path / "uploads"
    rows = [chat(f"q{i}", f"a{i}") for i in range(20)] + [chat("q0", "a0")]
    path = write(tmp_path, "d.jsonl", jsonl(*rows))
    result = import_files([path], uploads, system_prompt="sys", seed=3, eval_fraction=0.25)
    report = result.report
    assert result.folder == uploads / report.content_hash[:12]
    assert sorted(p.name for p in uploads.iterdir()) == [result.folder.name]  # no temp folders left
    assert sorted(p.name for p in result.folder.iterdir()) == ["eval.jsonl", "report.json", "train.jsonl"]
    train, evaluation = read_rows(result.train_path), read_rows(result.eval_path)
    assert train == [e.messages for e in report.train]
    assert evaluation == [e.messages for e in report.eval]
    assert len(train) + len(evaluation) == 21 and len(evaluation) == 5
    assert train[0][0] == S("sys")
    saved = json.loads(result.report_path.read_text())
    assert saved["content_hash"] == report.content_hash and saved["warnings"] == 1  # the duplicate
    assert to_prompt_completion(train[0]) == {"prompt": train[0][:-1], "completion": [train[0][-1]]}

    again = import_files([path], uploads, system_prompt="sys", seed=3, eval_fraction=0.25)
    assert again.folder == result.folder and read_rows(again.eval_path) == evaluation
    resplit = import_files([path], uploads, system_prompt="sys", seed=4, eval_fraction=0.25)
    assert resplit.folder == result.folder
    assert read_rows(resplit.eval_path) == [e.messages for e in resplit.report.eval]
    assert sorted(p.name for p in uploads.iterdir()) == [result.folder.name]


def test_an_import_that_holds_nothing_out_writes_no_eval_file_and_a_later_split_does(tmp_path):
    """Nothing held out (a split of 0, or under 5 rows) writes no eval.jsonl: an empty one
    made every reader of the import (the run, the proof) refuse it as holding no examples."""
    uploads = tmp_path / "uploads"
    path = write(tmp_path, "d.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(12)]))
    whole = import_files([path], uploads, eval_fraction=0.0)
    assert sorted(p.name for p in whole.folder.iterdir()) == ["report.json", "train.jsonl"]
    assert len(read_rows(whole.train_path)) == 12
    assert import_files([path], uploads, eval_fraction=0.0).folder == whole.folder  # the same import again
    split = import_files([path], uploads, eval_fraction=0.25)  # same rows, now with a held-out share
    assert split.folder == whole.folder and len(read_rows(split.eval_path)) == 3
    few = import_files([write(tmp_path, "few.jsonl", jsonl(*[chat(f"w{i}", "b") for i in range(4)]))], uploads,
                       min_examples=1)
    assert not few.eval_path.exists() and len(read_rows(few.train_path)) == 4


def test_an_imported_file_broken_by_hand_is_refused_by_the_reader(tmp_path):
    path = write(tmp_path, "train.jsonl", jsonl(chat("q", "a"), {"messages": [U("q")]}))
    with pytest.raises(DataError, match="line 2"):
        read_rows(path)


# --- a separate evaluation file ----------------------------------------------------------------


def test_an_evaluation_file_judges_instead_and_every_training_row_trains(tmp_path):
    uploads = tmp_path / "uploads"
    train_file = write(tmp_path, "train.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(30)]))
    held = write(tmp_path, "held.csv", "input,output\n" + "".join(f"new {i},b{i}\n" for i in range(7)))
    result = import_files([train_file], uploads, eval_files=[held])
    report = result.report
    assert [e.line for e in report.train] == list(range(1, 31))
    assert {e.source for e in report.train} == {"train.jsonl"}
    assert [e.messages for e in report.eval] == [[U(f"new {i}"), A(f"b{i}")] for i in range(7)]
    assert read_rows(result.eval_path) == [e.messages for e in report.eval]
    assert len(read_rows(result.train_path)) == 30
    split = report.stats["split"]
    assert (split["eval_rows"], split["eval_source"]) == (7, "file")
    assert split["note"] == "from your evaluation file held.csv"
    assert report.stats["files"] == {"train.jsonl": 30, "held.csv": 7}
    assert json.loads(result.report_path.read_text())["stats"]["split"]["eval_source"] == "file"
    text = report.render_text()
    assert "held.csv (csv, 7 examples, evaluation file)" in text
    assert "Judged on 7 rows from your evaluation file held.csv" in text

    split_only = check_files([train_file])
    assert report.content_hash != split_only.content_hash  # judged on other rows: another import
    other = write(tmp_path, "other.jsonl", jsonl(*[chat(f"other {i}", "c") for i in range(7)]))
    assert check_files([train_file], eval_files=[other]).content_hash != report.content_hash


def test_an_evaluation_row_that_is_also_a_training_row_is_a_warning_naming_both(tmp_path):
    train_file = write(tmp_path, "train.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(12)]))
    held = write(tmp_path, "held.jsonl", jsonl(chat("new", "b"), chat("q3", "a3"), chat("new", "b")))
    report = check_files([train_file], eval_files=[held])
    assert report.ok and len(report.eval) == 3 and len(report.train) == 12
    assert [(p.code, p.file, p.line) for p in report.warnings] == [
        ("eval_in_training", "held.jsonl", 2), ("duplicate", "held.jsonl", 3)]
    assert "line 4 of train.jsonl" in report.warnings[0].message
    assert "held.jsonl" in report.render_text() and "line 2" in report.render_text()


def test_a_bad_evaluation_file_imports_nothing_and_every_problem_is_named(tmp_path):
    uploads = tmp_path / "uploads"
    train_file = write(tmp_path, "train.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(12)]))
    held = write(tmp_path, "held.jsonl", jsonl(chat("new", "b"), "{oops", {"messages": [U("no answer")]}))
    with pytest.raises(DataError) as caught:
        import_files([train_file], uploads, eval_files=[held])
    assert not uploads.exists() or list(uploads.iterdir()) == []
    report = caught.value.report
    assert [(p.file, p.line) for p in report.errors] == [("held.jsonl", 2), ("held.jsonl", 3)]
    assert "held.jsonl" in str(caught.value)


def test_the_training_file_cannot_be_its_own_evaluation_file(tmp_path):
    train_file = write(tmp_path, "train.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(12)]))
    report = check_files([train_file], eval_files=[tmp_path / "." / "train.jsonl"])
    assert [(p.code, p.file) for p in report.errors] == [("eval_is_training", "train.jsonl")]
