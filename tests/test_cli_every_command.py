"""Every `tunelab` command and subcommand run once on a fresh home, through typer's
CliRunner. The commands are listed from the typer app itself, so a new command without
an entry in ``INVOCATIONS`` fails here. Commands that would train, serve or download run
with --help or with arguments they refuse cleanly; none may print a traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from backend.cli import app

runner = CliRunner()
REFUSED = 2  # the CLI's one error handler: a TuneLabError exits 2 with "Error: ..."

# command path -> (arguments after it, the exit code it must give); {tiny} is the tiny Llama,
# {tmp} a fresh folder
INVOCATIONS: dict[str, tuple[list[str], int]] = {
    "bases pull-default": (["--help"], 0),  # would download the default base
    "bases list": ([], 0),
    "bases add": (["{tmp}/missing.gguf"], REFUSED),
    "data check": (["{tmp}/none.jsonl", "--base", "{tiny}"], 1),  # the report: file not found
    "train": (["--data", "{tmp}/bad.jsonl", "--base", "{tiny}", "--name", "bad"], REFUSED),
    "jobs list": ([], 0),
    "jobs cancel": (["99"], REFUSED),
    "jobs run": ([], 0),
    "adapters list": ([], 0),
    "adapters show": (["nope"], REFUSED),
    "adapters delete": (["nope", "--yes"], REFUSED),
    "adapters mark": (["nope", "success"], REFUSED),
    "adapters export": (["nope", "{tmp}/out"], REFUSED),
    "adapters strength": (["nope", "0.5"], REFUSED),
    "adapters blend": (["nope", "nada"], REFUSED),
    "serve": (["--help"], 0),  # would serve until stopped
    "up": (["--help"], 0),
    "inspect": (["{tiny}"], 0),
    "evaluate": (["nope"], REFUSED),
    "ratings leaderboard": ([], 0),
    "ratings add": (["nope", "--prompt", "p", "--output", "o", "--score", "up"], REFUSED),
    "ratings export": (["--out", "{tmp}/pairs.jsonl"], 0),
}


def command_paths(group, prefix: str = "") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group (typer ships its own click)
            paths += command_paths(command, f"{path} ")
        else:
            paths.append(path)
    return sorted(paths)


COMMANDS = command_paths(typer.main.get_command(app))


def test_every_command_has_an_invocation():
    assert set(COMMANDS) == set(INVOCATIONS), (
        f"commands without a test invocation: {sorted(set(COMMANDS) - set(INVOCATIONS))}; "
        f"invocations of commands that are gone: {sorted(set(INVOCATIONS) - set(COMMANDS))}")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_runs_or_refuses_cleanly(command, home, tiny_llama, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    args, code = INVOCATIONS[command]
    args = [a.format(tiny=tiny_llama, tmp=tmp_path) for a in args]
    result = runner.invoke(app, [*command.split(), *args])
    assert result.exit_code == code, result.output
    assert "Traceback (most recent call last)" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if code == REFUSED:
        assert "Error:" in result.output
