"""Data bombs through the real entry points (`tunelab data check`, `tunelab train`): JSON
nested 10,000 levels deep and one 20 MB line are refused as line-numbered problems, fast
(the huge line is never parsed nor tokenized) and nothing is imported."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from backend.cli import app

runner = CliRunner()
GOOD = [{"messages": [{"role": "user", "content": f"wine {i}"}, {"role": "assistant", "content": "red"}]}
        for i in range(3)]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _file(tmp_path, bad_line: str):
    path = tmp_path / "bomb.jsonl"
    path.write_text("\n".join([json.dumps(GOOD[0]), bad_line, *map(json.dumps, GOOD[1:])]) + "\n")
    return path


@pytest.fixture()
def tokenized(monkeypatch):
    """The length of every conversation the base's tokenizer is asked to render."""
    from transformers import PreTrainedTokenizerBase

    seen: list[int] = []
    original = PreTrainedTokenizerBase.apply_chat_template

    def counting(self, conversation, *args, **kwargs):
        batch = conversation if conversation and isinstance(conversation[0], list) else [conversation]
        seen.extend(sum(len(m["content"]) for m in c) for c in batch)
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", counting)
    return seen


def _nothing_imported(home, name):
    uploads = home / "datasets" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not (home / "adapters" / name).exists()


@pytest.mark.parametrize("bomb", ['{"messages": ' + "[" * 10_000 + "]" * 10_000 + "}",
                                  '{"a":' * 10_000 + "1" + "}" * 10_000], ids=["lists", "objects"])
def test_deep_json_is_a_line_numbered_problem_not_a_traceback(home, tiny_llama, tmp_path, bomb):
    path = _file(tmp_path, bomb)
    check = _run("data", "check", path, "--base", tiny_llama)
    assert check.exit_code == 1 and "Traceback" not in check.output and "RecursionError" not in check.output
    assert "line 2" in check.output and "nested too deeply" in check.output
    train = _run("train", "--data", path, "--base", tiny_llama, "--name", "deep")
    assert train.exit_code == 2 and "Traceback" not in train.output and "line 2" in train.output
    _nothing_imported(home, "deep")


def test_deep_json_file_is_refused(home, tiny_llama, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"messages": ' + "[" * 10_000 + "]" * 10_000 + "}")
    check = _run("data", "check", path, "--base", tiny_llama)
    assert check.exit_code == 1 and "Traceback" not in check.output and "nested too deeply" in check.output


def test_a_20_mb_line_is_refused_unread_and_untokenized(home, tiny_llama, tmp_path, tokenized):
    huge = json.dumps({"messages": [{"role": "user", "content": "x " * 10_000_000},
                                    {"role": "assistant", "content": "red"}]})
    path = _file(tmp_path, huge)
    check = _run("data", "check", path, "--base", tiny_llama)
    assert check.exit_code == 1 and "Traceback" not in check.output
    assert "line 2" in check.output and "19.1 MB" in check.output and "1,024 KB" in check.output
    assert tokenized and max(tokenized) < 1000  # the good rows were tokenized, the huge one never
    train = _run("train", "--data", path, "--base", tiny_llama, "--name", "huge")
    assert train.exit_code == 2 and "line 2" in train.output
    assert max(tokenized) < 1000
    _nothing_imported(home, "huge")


def test_the_limit_is_the_setting(home, tiny_llama, tmp_path, monkeypatch):
    path = _file(tmp_path, json.dumps({"messages": [{"role": "user", "content": "y" * 3000},
                                                    {"role": "assistant", "content": "red"}]}))
    assert "lines over" not in _run("data", "check", path, "--base", tiny_llama).output
    monkeypatch.setenv("TUNELAB_MAX_LINE_KB", "2")
    refused = _run("data", "check", path, "--base", tiny_llama)
    assert refused.exit_code == 1 and "line 2: This line is 3 KB long; lines over 2 KB" in refused.output
