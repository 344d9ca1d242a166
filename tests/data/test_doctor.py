"""The data doctor on real files written to tmp_path: every format, every problem, import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.data.doctor import (
    RULES,
    check_files,
    chat_token_lengths,
    import_files,
    style_prompt,
)
from backend.data.normalized import read_rows, to_prompt_completion
from backend.errors import DataError

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def where(report) -> set[tuple]:
    return {(p.code, p.file, p.line, p.field) for p in report.problems}


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
S = lambda text: {"role": "system", "content": text}  # noqa: E731


# --- good files, every format ------------------------------------------------------------------

GOOD = [
    ("chat.jsonl", jsonl({"messages": [S("be brief"), U("hi"), {"role": "model", "content": "hello"}]}),
     "messages", [S("be brief"), U("hi"), A("hello")]),
    ("multi.jsonl", jsonl({"messages": [U("a"), A("b"), U("c"), A("d")]}), "messages",
     [U("a"), A("b"), U("c"), A("d")]),
    ("parts.jsonl", jsonl({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, A("yo")]}),
     "messages", [U("hi"), A("yo")]),
    ("gemini.jsonl", jsonl({"systemInstruction": {"parts": [{"text": "sys"}]},
                            "contents": [{"role": "user", "parts": [{"text": "q"}]},
                                         {"role": "model", "parts": [{"text": "a1"}, {"text": "a2"}]}]}),
     "gemini", [S("sys"), U("q"), A("a1\na2")]),
    ("gemini2.jsonl", jsonl({"system_instruction": {"parts": [{"text": "sys"}]},
                             "contents": [{"role": "user", "parts": [{"text": "q"}]},
                                          {"role": "model", "parts": [{"text": "a"}]}]}),
     "gemini", [S("sys"), U("q"), A("a")]),
    ("pc.jsonl", jsonl({"prompt": "2+2?", "completion": "4"}), "prompt-completion", [U("2+2?"), A("4")]),
    ("pcc.jsonl", jsonl({"prompt": [S("math"), U("2+2?")], "completion": [A("4")]}),
     "prompt-completion (conversational)", [S("math"), U("2+2?"), A("4")]),
    ("alpaca.jsonl", jsonl({"instruction": "Translate", "input": "chat", "output": "cat"},
                           {"instruction": "Say hi", "input": "", "output": "hi"}),
     "alpaca", [U("Translate\n\nchat"), A("cat")]),
    ("io.jsonl", jsonl({"input": "ping", "output": "pong"}), "input-output", [U("ping"), A("pong")]),
    ("sharegpt.jsonl", jsonl({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                                                {"from": "gpt", "value": "a"}]}),
     "sharegpt", [S("s"), U("q"), A("a")]),
    ("array.json", json.dumps([chat("q1", "a1"), chat("q2", "a2")], indent=2), "messages", [U("q1"), A("a1")]),
    ("emails.csv", 'text,label\n"Charged twice, please refund",billing\n', "csv",
     [U("Charged twice, please refund"), A("billing")]),
    ("qa.csv", "Question,Answer,system\nWhy?,Because.,Be terse.\n", "csv", [S("Be terse."), U("Why?"), A("Because.")]),
    ("instr.csv", "instruction,input,output\nUpper-case,abc,ABC\n", "csv", [U("Upper-case\n\nabc"), A("ABC")]),
    ("tabs.tsv", "prompt\tcompletion\nhi\tyo\n", "csv", [U("hi"), A("yo")]),
    ("style.txt", "Leaves fall.\nGold light.\n\n\n  \nMist rises.\n", "text",
     [U("Write a short passage with an autumn mood."), A("Leaves fall.\nGold light.")]),
    ("style.jsonl", jsonl({"text": "Leaves fall."}), "text",
     [U("Write a short passage with an autumn mood."), A("Leaves fall.")]),
]


@pytest.mark.parametrize("name,content,fmt,first", GOOD, ids=[g[0] for g in GOOD])
def test_good_file_of_every_format_normalizes(tmp_path, name, content, fmt, first):
    report = check_files([write(tmp_path, name, content)], goal="autumn mood", min_examples=1)
    assert report.ok, report.render_text()
    assert report.problems == []
    assert report.formats == {name: fmt}
    assert report.examples[0].messages == first
    assert report.examples[0].source == name
    assert report.examples[0].messages[-1]["role"] == "assistant"


def test_line_numbers_follow_the_file(tmp_path):
    txt = write(tmp_path, "s.txt", "one\n\n\nthree\nfour\n\nsix\n")
    csv_file = write(tmp_path, "c.csv", 'input,output\n"multi\nline",x\nb,y\n')
    arr = write(tmp_path, "a.json", json.dumps([chat("q1", "a1"), chat("q2", "a2")], indent=1))
    report = check_files([txt, csv_file, arr], min_examples=1)
    lines = [(e.source, e.line) for e in report.examples]
    assert lines[:3] == [("s.txt", 1), ("s.txt", 4), ("s.txt", 7)]
    assert lines[3:5] == [("c.csv", 2), ("c.csv", 4)]
    first, second = [line for source, line in lines if source == "a.json"]
    assert first == 2 and second > first


def test_crlf_and_byte_order_mark_are_read(tmp_path):
    csv_file = write(tmp_path, "w.csv", b"\xef\xbb\xbftext,label\r\nhello,other\r\n")
    txt = write(tmp_path, "w.txt", b"one\r\ntwo\r\n\r\nthree\r\n")
    lines = write(tmp_path, "w.jsonl", jsonl(chat("q", "a")).replace("\n", "\r\n").encode())
    report = check_files([csv_file, txt, lines], min_examples=1)
    assert report.ok, report.render_text()
    assert [e.messages[-1]["content"] for e in report.examples] == ["other", "one\ntwo", "three", "a"]


def test_style_prompt_from_goal():
    assert style_prompt("autumn mood") == "Write a short passage with an autumn mood."
    assert style_prompt(None) == "Write a short passage."
    assert style_prompt("  ") == "Write a short passage."
    assert style_prompt("pirate voice!") == "Write a short passage with a pirate voice."
    assert style_prompt("in the style of Poe") == "Write a short passage in the style of Poe."
    assert style_prompt("Write like Hemingway") == "Write like Hemingway."


def test_text_without_goal_uses_neutral_prompt(tmp_path):
    report = check_files([write(tmp_path, "s.txt", "A passage.\n")], min_examples=1)
    assert report.examples[0].messages == [U("Write a short passage."), A("A passage.")]


# --- bad files: every problem by file, line and field -----------------------------------------

BAD = [
    ("role.jsonl", jsonl(chat("ok", "ok"), {"messages": [{"role": "bot", "content": "x"}, A("y")]}),
     {("unknown_role", 2, "messages[0].role")}),
    ("noanswer.jsonl", jsonl({"messages": [S("s"), U("q")]}), {("no_assistant", 1, "messages")}),
    ("last.jsonl", jsonl({"messages": [U("q"), A("a"), U("again?")]}), {("last_not_assistant", 1, "messages[2].role")}),
    ("nouser.jsonl", jsonl({"messages": [S("s"), A("a")]}), {("no_user", 1, "messages")}),
    ("empty.jsonl", jsonl({"messages": [U("q"), A("   ")]}), {("empty_text", 1, "messages[1].content")}),
    ("nocontent.jsonl", jsonl({"messages": [U("q"), {"role": "assistant"}]}), {("missing_field", 1, "messages[1].content")}),
    ("type.jsonl", jsonl({"messages": [U("q"), {"role": "assistant", "content": 4}]}),
     {("wrong_type", 1, "messages[1].content")}),
    ("badjson.jsonl", jsonl(chat("q", "a"), '{"messages": [', chat("q2", "a2")), {("bad_json", 2, None)}),
    ("array_line.jsonl", jsonl(chat("q", "a"), "[1, 2]"), {("not_object", 2, None)}),
    ("unknown.jsonl", jsonl({"question": "q", "reply": "a"}), {("unknown_format", 1, None)}),
    ("gem.jsonl", jsonl({"contents": [{"role": "user", "parts": [{"inlineData": {}}]},
                                      {"role": "bot", "parts": [{"text": "a"}]}]}),
     {("wrong_type", 1, "contents[0].parts"), ("unknown_role", 1, "contents[1].role")}),
    ("gemsys.jsonl", jsonl({"systemInstruction": {"parts": [{"text": " "}]},
                            "contents": [{"role": "user", "parts": [{"text": "q"}]},
                                         {"role": "model", "parts": [{"text": "a"}]}]}),
     {("empty_text", 1, "systemInstruction")}),
    ("pc.jsonl", jsonl({"prompt": "q"}, {"prompt": "q", "completion": ""}),
     {("missing_field", 1, "completion"), ("empty_text", 2, "completion")}),
    ("pcc.jsonl", jsonl({"prompt": [U("q")], "completion": [{"role": "critic", "content": "a"}]}),
     {("unknown_role", 1, "completion[0].role")}),
    ("alpaca.jsonl", jsonl({"instruction": "Do it", "input": "", "output": ""}, {"instruction": "x"}),
     {("empty_text", 1, "output"), ("missing_field", 2, "output")}),
    ("share.jsonl", jsonl({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}),
     {("unknown_role", 1, "conversations[1].from")}),
    ("cols.csv", "q,a\n1,2\n", {("csv_missing_columns", 1, "column")}),
    ("cells.csv", "text,label\nhello,\n,billing\nfine,other\n",
     {("empty_text", 2, "label"), ("empty_text", 3, "text")}),
    ("latin1.txt", "caf\u00e9 one\n\nok\n\nna\u00efve\n".encode("latin-1"), {("not_utf8", 1, None)}),
    ("blank.txt", "\n \n\n", {("empty_file", None, None)}),
    ("header_only.csv", "text,label\n", {("empty_file", None, None)}),
    ("data.xlsx", b"PK\x03\x04binary", {("unsupported_file", None, None)}),
]


@pytest.mark.parametrize("name,content,expected", BAD, ids=[b[0] for b in BAD])
def test_each_problem_is_located_by_file_line_and_field(tmp_path, name, content, expected):
    report = check_files([write(tmp_path, name, content)], min_examples=1)
    found = {(code, line, field_) for code, file, line, field_ in where(report) if file == name}
    assert expected <= found, report.render_text()
    assert not report.ok
    for problem in report.problems:
        assert problem.code in RULES and RULES[problem.code].severity == problem.severity


def test_messages_say_what_was_given_and_what_to_do(tmp_path):
    report = check_files([
        write(tmp_path, "u.jsonl", jsonl({"question": "q", "reply": "a"})),
        write(tmp_path, "c.csv", "q,a\n1,2\n"),
        write(tmp_path, "r.jsonl", jsonl({"messages": [{"role": "bot", "content": "x"}, A("y")]})),
    ], min_examples=1)
    by_code = {p.code: p.message for p in report.problems}
    assert "'question', 'reply'" in by_code["unknown_format"] and '"messages"' in by_code["unknown_format"]
    assert "'q', 'a'" in by_code["csv_missing_columns"] and "input_column" in by_code["csv_missing_columns"]
    assert "'bot'" in by_code["unknown_role"] and "assistant" in by_code["unknown_role"]


def test_not_utf8_names_the_line_of_the_first_bad_byte(tmp_path):
    path = write(tmp_path, "l.csv", b"text,label\nfine,other\ncaf\xe9,billing\nna\xefve,bugs\n")
    report = check_files([path], min_examples=1)
    [problem] = [p for p in report.problems if p.code == "not_utf8"]
    assert (problem.file, problem.line) == ("l.csv", 3)
    assert "0xE9" in problem.message and "3, 4" in problem.message


def test_missing_file_is_an_error(tmp_path):
    report = check_files([tmp_path / "nope.jsonl"])
    assert [(p.code, p.file) for p in report.errors][0] == ("file_not_found", "nope.jsonl")


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    path = write(tmp_path, "many.jsonl", jsonl(
        chat("fine", "fine"),
        "not json",
        {"messages": [{"role": "bot", "content": ""}, U("q")]},
        {"foo": 1},
        {"prompt": "q"},
    ))
    report = check_files([path], min_examples=1)
    assert {(p.line, p.field, p.code) for p in report.errors} == {
        (2, None, "bad_json"),
        (3, "messages[0].role", "unknown_role"),
        (3, "messages[0].content", "empty_text"),
        (4, None, "unknown_format"),
        (5, "completion", "missing_field"),
    }
    assert len(report.examples) == 1


# --- CSV columns ------------------------------------------------------------------------------


def test_csv_columns_can_be_chosen(tmp_path):
    path = write(tmp_path, "t.csv", "id,body,category\n1,Refund me,billing\n2,App crashes,bugs\n")
    detected = check_files([path], min_examples=1)
    [problem, none] = detected.errors
    assert (none.code, none.file) == ("no_examples", None)
    assert (problem.code, problem.line, problem.field) == ("csv_missing_columns", 1, "column")
    assert "'id', 'body', 'category'" in problem.message

    chosen = check_files([path], input_column="body", output_column="category", min_examples=1)
    assert chosen.ok
    assert [e.messages for e in chosen.examples] == [[U("Refund me"), A("billing")], [U("App crashes"), A("bugs")]]

    wrong = check_files([path], input_column="text", output_column="category", min_examples=1)
    [problem] = [p for p in wrong.errors if p.file]
    assert (problem.code, problem.line, problem.field) == ("csv_unknown_column", 1, "column")
    assert "'text'" in problem.message and "'body'" in problem.message


def test_explicit_column_wins_over_detection(tmp_path):
    path = write(tmp_path, "t.csv", "text,label,answer\nq,lbl,ans\n")
    assert check_files([path], min_examples=1).examples[0].messages == [U("q"), A("ans")]
    report = check_files([path], output_column="label", min_examples=1)
    assert report.examples[0].messages == [U("q"), A("lbl")]


# --- several files, duplicates, counts ---------------------------------------------------------


def test_several_files_one_report_grouped_by_file(tmp_path):
    good = write(tmp_path, "good.jsonl", jsonl(*[chat(f"q{i}", f"a{i}") for i in range(3)]))
    bad = write(tmp_path, "bad.csv", "text,label\nhello,\n")
    report = check_files([good, bad], min_examples=1)
    assert report.formats == {"good.jsonl": "messages", "bad.csv": "csv"}
    assert [(p.file, p.line, p.field) for p in report.errors] == [("bad.csv", 2, "label")]
    text = report.render_text()
    assert text.index("good.jsonl") < text.index("bad.csv") < text.index("line 2, field 'label'")
    assert "1 error(s)" in text
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
    assert "1 problem(s)" in report.errors[-1].message
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


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


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


def test_an_imported_file_broken_by_hand_is_refused_by_the_reader(tmp_path):
    path = write(tmp_path, "train.jsonl", jsonl(chat("q", "a"), {"messages": [U("q")]}))
    with pytest.raises(DataError, match="line 2"):
        read_rows(path)


# --- shipped samples -----------------------------------------------------------------------------


def test_shipped_samples_pass(tokenizer):
    samples = sorted(SAMPLES.iterdir())
    assert {p.name for p in samples} >= {"autumn_style.txt", "support_emails.csv", "wine_color.jsonl",
                                         "product_specs.jsonl"}
    for sample in samples:
        report = check_files([sample], tokenizer=tokenizer, goal="autumn mood")
        assert report.ok and report.warnings == [], report.render_text()
        assert report.stats["examples"] >= 10 and report.stats["tokens"]["max"] > 0
    labels = {e.messages[-1]["content"] for e in check_files([SAMPLES / "support_emails.csv"]).examples}
    assert labels == {"billing", "bugs", "other"}
