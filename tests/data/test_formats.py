"""The readers of every file kind on real files written to tmp_path: every format
normalized, every problem located by file, line and field and worded by its rule."""

from __future__ import annotations

import json

import pytest

from backend.data.doctor import check_files
from backend.data.formats import ACCEPTED_FILES, CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from backend.data.problems import RULES
from backend.data.style_text import paragraphs, style_prompt
from tests.data.files import A, S, U, chat, jsonl, where, write


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


# --- file kinds -------------------------------------------------------------------------------


def test_every_suffix_the_readers_take_is_read_and_named_when_refusing_others(tmp_path):
    for suffix in sorted(JSON_SUFFIXES):
        report = check_files([write(tmp_path, f"d{suffix}", jsonl(chat("q", "a")))], min_examples=1)
        assert report.ok and report.formats == {f"d{suffix}": "messages"}, suffix
    for suffix in sorted(CSV_SUFFIXES):
        sep = "\t" if suffix == ".tsv" else ","
        report = check_files([write(tmp_path, f"d{suffix}", f"input{sep}output\nq{sep}a\n")], min_examples=1)
        assert report.ok and report.formats == {f"d{suffix}": "csv"}, suffix
    for suffix in sorted(TEXT_SUFFIXES):
        report = check_files([write(tmp_path, f"d{suffix}", "One.\n\nTwo.\n")], min_examples=1)
        assert report.ok and report.stats["examples"] == 2, suffix

    [problem] = check_files([write(tmp_path, "d.xlsx", b"PK\x03\x04binary")]).errors[:1]
    assert problem.code == "unsupported_file" and ACCEPTED_FILES in problem.message
    for suffix in JSON_SUFFIXES | CSV_SUFFIXES | TEXT_SUFFIXES:
        assert suffix in ACCEPTED_FILES


def test_paragraphs_keep_their_first_line():
    assert paragraphs("\none\ntwo\n\n\nthree  \n") == [(2, "one\ntwo"), (6, "three")]


def test_every_rule_is_listed_once_by_its_code():
    assert all(code == rule.code for code, rule in RULES.items())
    assert {rule.severity for rule in RULES.values()} == {"error", "warning"}
