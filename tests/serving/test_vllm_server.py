"""vLLM as the serving engine (``--engine vllm``, issue 19). vLLM itself needs a CUDA GPU,
so here: its command line and environment, the rank it is started with, the refusal
where it is not installed (CLI: exit 2, the install hint, no traceback), and the
supervisor's whole life with TuneLab's own server as the child process it supervises
(it serves the same routes): started and awaited until healthy, killed with -9 and
restarted, its adapters loaded again, stopped with nothing left running."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from backend.cli import app
from backend.errors import ConfigError
from backend.serving.client import ServingClient
from backend.serving.vllm_server import (INSTALL_HINT, Supervisor, max_lora_rank, require_vllm, vllm_command,
                                         vllm_environment)
from tests.builders import make_lora

NO_VLLM = importlib.util.find_spec("vllm") is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_command_turns_on_runtime_lora_with_the_token_and_tensor_parallelism():
    command = vllm_command("/models/llama", "llama-8b", host="127.0.0.1", port=8123, api_key="s3cret", gpus=4,
                           max_rank=32, max_model_len=4096)
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    options = {arg: value for arg, value in zip(command[3:], command[4:] + [""])
               if arg.startswith("--") and not value.startswith("--")}
    assert "--enable-lora" in command
    assert {k: options[k] for k in ("--model", "--served-model-name", "--port", "--api-key", "--max-lora-rank",
                                    "--tensor-parallel-size", "--max-model-len")} == {
        "--model": "/models/llama", "--served-model-name": "llama-8b", "--port": "8123", "--api-key": "s3cret",
        "--max-lora-rank": "32", "--tensor-parallel-size": "4", "--max-model-len": "4096"}
    assert vllm_environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


@pytest.mark.parametrize("ranks, expected", [([], 16), ([4], 16), ([24], 32), ([8, 64], 64), ([300], 320)])
def test_the_max_lora_rank_holds_every_adapter_on_disk(tmp_path, ranks, expected):
    for i, r in enumerate(ranks):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")  # refused later, at its own load
    assert max_lora_rank(tmp_path) == expected


def test_a_rank_pattern_counts_and_a_rank_vllm_cannot_serve_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 128}}))
    assert max_lora_rank(tmp_path) == 128
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(ConfigError, match="ranks up to 512"):
        max_lora_rank(tmp_path)


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here: the refusal cannot be seen")
@pytest.mark.parametrize("command", [["serve", "--engine", "vllm"], ["up", "--engine", "vllm"]])
def test_without_vllm_the_commands_say_how_to_install_it_and_exit_2(home, command):
    with pytest.raises(ConfigError, match="not installed"):
        require_vllm()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert INSTALL_HINT.split(" (")[0] in result.output and "Traceback" not in result.output


def test_an_unknown_engine_is_refused(home):
    result = CliRunner().invoke(app, ["serve", "--engine", "tgi"])
    assert result.exit_code == 2 and "--engine embedded" in result.output


def test_the_supervisor_starts_restarts_reloads_and_stops_its_engine(tiny_llama, tmp_path):
    """The child is `tunelab serve` (the same routes as vLLM): kill -9 it, and the supervisor
    starts it again and calls on_restart, which loads the adapter back, as `up` does."""
    port, token = _free_port(), "sup-token"
    home = tmp_path / "home"
    adapter = make_lora(tiny_llama, home / "adapters" / "autumn", seed=5)
    env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_API_TOKEN": token}
    command = [sys.executable, "-m", "backend.cli", "serve", "--base", str(tiny_llama), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    reloads = []

    def load_adapters():  # what Service.sync_endpoint does: load what the engine does not serve
        with ServingClient(url, token) as client:
            if "autumn" not in client.adapters():
                client.load_adapter("autumn", str(adapter))
        reloads.append(time.monotonic())

    supervisor = Supervisor(command, url, env=env, log_file=tmp_path / "engine.log", start_timeout=180,
                            check_every=0.5, on_restart=load_adapters)
    supervisor.start()
    try:
        assert supervisor.healthy()
        load_adapters()
        first = supervisor.process
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        deadline = time.monotonic() + 180
        while len(reloads) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert supervisor.restarts == 1 and supervisor.process.pid != first.pid and len(reloads) == 2
        models = [m["id"] for m in httpx.get(url + "/v1/models", timeout=30).json()["data"]]
        assert "autumn" in models  # the restarted engine serves the adapter again
    finally:
        supervisor.stop()
    assert supervisor.process.poll() is not None  # nothing left running
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_a_child_that_exits_while_starting_is_a_clear_error_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('CUDA out of memory (pretend)'); sys.exit(3)"]
    supervisor = Supervisor(command, f"http://127.0.0.1:{_free_port()}", log_file=tmp_path / "engine.log",
                            start_timeout=60)
    with pytest.raises(ConfigError) as refused:
        supervisor.start()
    assert "exited with code 3" in str(refused.value) and "CUDA out of memory (pretend)" in str(refused.value)
