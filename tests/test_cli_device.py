"""`tunelab train --quantize / --processes` through typer's CliRunner: on a machine without CUDA,
quantizing is refused before anything is imported or queued (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from backend.cli import app

runner = CliRunner()


def _data(tmp_path):
    data = tmp_path / "colors.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"color of thing {i}?"},
                          {"role": "assistant", "content": "red" if i % 2 else "white"}]} for i in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


@pytest.fixture()
def no_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --quantize is allowed here")


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantize_without_cuda_exits_2_saying_it_needs_a_gpu(home, tiny_llama, tmp_path, no_cuda, bits):
    result = runner.invoke(app, ["train", "--data", str(_data(tmp_path)), "--name", "q", "--base", str(tiny_llama),
                                 "--quantize", bits, "--detach"])
    assert result.exit_code == 2, result.output
    assert f"--quantize {bits}" in result.output and "needs a CUDA GPU" in result.output
    assert "Traceback" not in result.output
    assert not (home / "adapters" / "q").exists()
    listed = runner.invoke(app, ["jobs", "list"])
    assert "q" not in listed.output.split()  # nothing was queued


def test_a_bad_quantize_value_names_the_option(home, tiny_llama, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(_data(tmp_path)), "--name", "q", "--base", str(tiny_llama),
                                 "--quantize", "3bit", "--detach"])
    assert result.exit_code == 2 and "quantize" in result.output and "Traceback" not in result.output


def test_processes_is_queued_in_the_spec(home, tiny_llama, tmp_path):
    from backend.settings import Settings
    from backend.store import Store

    result = runner.invoke(app, ["train", "--data", str(_data(tmp_path)), "--name", "two", "--base", str(tiny_llama),
                                 "--processes", "2", "--detach"])
    assert result.exit_code == 0, result.output
    jobs = Store(Settings(home=home).db_url).list_jobs(("queued",))
    assert [j.request["spec"]["train"]["processes"] for j in jobs] == [2]
