"""Bounds of the data doctor: JSON nested too deeply and lines past ``max_line_kb`` are
line-numbered problems like any other, refused before they cost anything."""

from __future__ import annotations

import json

import pytest

from backend.data.doctor import check_files
from backend.data.formats import read_file
from tests.data.files import chat, jsonl, where, write

DEEP_LIST = '{"messages": ' + "[" * 10_000 + "]" * 10_000 + "}"
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_OBJECT], ids=["lists", "objects"])
def test_deep_nesting_in_json_lines_is_a_problem_on_its_line(tmp_path, deep):
    path = write(tmp_path, "deep.jsonl", jsonl(chat("q", "a"), deep, chat("q2", "a2")))
    report = check_files([path], min_examples=1)
    assert where(report) >= {("too_deep", "deep.jsonl", 2, None)}
    assert [e.line for e in report.examples] == [1, 3]
    assert "nested too deeply" in report.render_text()


@pytest.mark.parametrize("text", [DEEP_LIST, "[" + json.dumps(chat("q", "a")) + "," + DEEP_LIST + "]"],
                         ids=["one-object", "array"])
def test_deep_nesting_in_a_json_file_is_a_problem(tmp_path, text):
    report = check_files([write(tmp_path, "deep.json", text)], min_examples=1)
    assert ("too_deep", "deep.json", 1, None) in where(report)
    assert not report.ok


def test_a_record_parsed_but_too_deep_to_walk_is_one_problem(tmp_path, monkeypatch):
    import backend.data.json_records as records

    def deep_walk(*_args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(records, "_from_messages", deep_walk)
    path = write(tmp_path, "x.jsonl", jsonl(chat("q", "a")))
    result = read_file(path, "x.jsonl", style_prompt="p")
    assert [(p.code, p.line) for p in result.problems] == [("too_deep", 1)] and not result.examples


def test_a_line_past_the_limit_is_refused_naming_its_size_and_the_limit(tmp_path):
    big = json.dumps(chat("x" * 300_000, "a"))
    path = write(tmp_path, "big.jsonl", jsonl(chat("q", "a"), big, chat("q2", "a2")))
    report = check_files([path], min_examples=1, max_line_bytes=100 * 1024)
    (problem,) = report.errors
    assert (problem.code, problem.file, problem.line) == ("line_too_long", "big.jsonl", 2)
    assert "293 KB" in problem.message and "100 KB" in problem.message and "TUNELAB_MAX_LINE_KB" in problem.message
    assert [e.line for e in report.examples] == [1, 3]  # the other lines of JSON lines are still read


@pytest.mark.parametrize("name", ["big.json", "big.csv", "big.txt"])
def test_other_files_with_a_line_past_the_limit_are_refused_whole(tmp_path, name):
    long = "x" * 5000
    content = {"big.json": "[" + json.dumps(chat(long, "a")) + "]",
               "big.csv": f"input,output\n{long},a\nshort,b\n",
               "big.txt": f"{long}\n\nshort paragraph\n"}[name]
    report = check_files([write(tmp_path, name, content)], min_examples=1, max_line_bytes=1024)
    assert any(p.code == "line_too_long" and "whole file is refused" in p.message for p in report.errors)
    assert not report.examples


def test_lines_within_the_limit_and_no_limit_read_as_before(tmp_path):
    path = write(tmp_path, "ok.jsonl", jsonl(*[chat(f"q{i}", "a" * 2000) for i in range(3)]))
    assert check_files([path], min_examples=1, max_line_bytes=4096).ok
    assert check_files([path], min_examples=1).ok


def test_only_usable_rows_are_tokenized(tmp_path):
    class Counting:
        chat_template = "x"
        name_or_path = "counting"
        seen: list = []

        def apply_chat_template(self, conversations, **_kwargs):
            batch = conversations if conversations and isinstance(conversations[0], list) else [conversations]
            Counting.seen += [c[0]["content"] for c in batch if c]
            ids = [[1] * sum(len(m["content"]) for m in c) for c in batch]
            return ids if batch is conversations else ids[0]

    rows = [chat("good", "a"), {"messages": [{"role": "robot", "content": "bad row"}, {"role": "assistant",
                                                                                        "content": "b"}]},
            json.dumps(chat("huge " + "x" * 4000, "a"))]
    path = write(tmp_path, "mixed.jsonl", jsonl(*rows))
    report = check_files([path], min_examples=1, tokenizer=Counting(), max_tokens=100, max_line_bytes=1024)
    assert {p.code for p in report.errors} == {"unknown_role", "line_too_long"}
    assert set(Counting.seen) == {"good"}
