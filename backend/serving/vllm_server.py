"""vLLM as TuneLab's serving engine for more traffic or more GPUs (``--engine vllm``).

:class:`Supervisor` starts vLLM's OpenAI server as a child process for the chosen base,
with runtime LoRA updating on (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), ``--max-lora-rank``
from the adapters on disk, TuneLab's API token as its ``--api-key`` and tensor parallelism
over ``gpus``; it waits for ``/health``, restarts the process if it dies, and stops it
with TuneLab. Everything else is unchanged: TuneLab's client loads finished adapters into
it with ``POST /v1/load_lora_adapter`` exactly as into the embedded engine, and the page
chats with it through the same OpenAI routes (docs/serving.md, Serving at scale with vLLM).

The supervisor runs any command that serves those routes, so its start / health / restart
/ stop life is tested here with TuneLab's own server as the child; the vLLM command line
is built by :func:`vllm_command` and checked on its own (vLLM needs a CUDA GPU).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from backend.adapter_folder import CONFIG_FILE
from backend.bases.resolve import resolve_base
from backend.errors import ConfigError
from backend.serving.auth import api_token
from backend.serving.client import ServingClient

log = logging.getLogger("tunelab.vllm")

# the ranks vLLM's --max-lora-rank accepts (vllm/config: possible_max_ranks)
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
INSTALL_HINT = "pip install 'tunelab[vllm]' (vLLM needs a CUDA GPU and its matching torch)"


def require_vllm() -> None:
    """Refuse, before anything starts, where vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("--engine vllm needs vLLM, which is not installed in this environment.",
                          fix=f"Install it with {INSTALL_HINT}, or leave --engine out to use the embedded engine.")


def max_lora_rank(adapters_dir: Path, floor: int = 16) -> int:
    """The smallest rank vLLM accepts that holds every adapter in ``adapters_dir`` (at least
    ``floor``, so adapters trained later with TuneLab's default rank load too)."""
    need = floor
    for config in Path(adapters_dir).glob(f"*/{CONFIG_FILE}"):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a broken folder is refused when it is loaded, with its own message
        if isinstance(data, dict):
            ranks = [data.get("r")] + list((data.get("rank_pattern") or {}).values())
            need = max([need] + [r for r in ranks if isinstance(r, int)])
    for rank in VLLM_RANKS:
        if rank >= need:
            return rank
    raise ConfigError(f"An adapter in {adapters_dir} has rank {need}; vLLM serves ranks up to {VLLM_RANKS[-1]}.",
                      fix="Serve it with the embedded engine (leave --engine out), or retrain at a lower rank.")


def vllm_command(model_path: str, served_name: str, *, host: str, port: int, api_key: str, gpus: int = 1,
                 max_rank: int = 16, max_loras: int = 16, max_model_len: int | None = None) -> list[str]:
    """The command line of vLLM's OpenAI server for TuneLab."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
               "--served-model-name", served_name, "--host", host, "--port", str(port), "--api-key", api_key,
               "--enable-lora", "--max-lora-rank", str(max_rank), "--max-loras", str(max_loras),
               "--tensor-parallel-size", str(gpus), "--dtype", "auto"]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    return command


def vllm_environment() -> dict[str, str]:
    """The child's environment: runtime LoRA loading on (vLLM refuses load_lora_adapter otherwise)."""
    return {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


class Supervisor:
    """Runs ``command`` as a child process serving at ``url``: started, awaited until
    ``/health`` answers, restarted when it dies (at most ``max_restarts`` times; then
    ``on_restart()``, which loads the adapters again), stopped with :meth:`stop`."""

    def __init__(self, command: list[str], url: str, *, env: dict | None = None, log_file: Path | None = None,
                 start_timeout: float = 900.0, check_every: float = 2.0, max_restarts: int = 5,
                 on_restart=None):
        self.command, self.url, self.env = command, url.rstrip("/"), env
        # called once a restarted child is healthy: it lost its adapters, which are loaded again
        self.on_restart = on_restart
        self.log_file, self.start_timeout, self.check_every = log_file, start_timeout, check_every
        self.max_restarts = max_restarts
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> "Supervisor":
        """Start the child and return once it is healthy; a child that exits or stays
        unhealthy past ``start_timeout`` is a :class:`ConfigError` with its last output."""
        self._spawn()
        self._wait_healthy()
        self._watch = threading.Thread(target=self._keep_alive, name="tunelab-vllm-watch", daemon=True)
        self._watch.start()
        return self

    def healthy(self) -> bool:
        with ServingClient(self.url) as client:  # the one health check, the same for every engine
            return client.health()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout)
        self._terminate(timeout)

    # --- the child ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            # a session of its own: a stop reaches the workers vLLM starts (tensor parallel ranks)
            self.process = subprocess.Popen(self.command, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            if self.log_file:
                output.close()
        log.info("started the serving engine (pid %d): %s", self.process.pid, " ".join(self.command[:6]))

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.process.poll() is not None:
                raise ConfigError(f"The serving engine exited with code {self.process.returncode} while starting."
                                  + self._tail(), fix="Read its log above; fix the cause and start again.")
            if self.healthy():
                return
            time.sleep(0.5)
        self._terminate(10)
        raise ConfigError(f"The serving engine did not answer {self.url}/health within {self.start_timeout:.0f} s."
                          + self._tail(), fix="Read its log; a large base may need a longer start.")

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.check_every):
            if self.process.poll() is None:
                continue
            if self.restarts >= self.max_restarts:
                log.error("the serving engine died %d times; not restarting it again", self.restarts)
                return
            self.restarts += 1
            log.warning("the serving engine exited (code %s); restarting it (%d)", self.process.returncode,
                        self.restarts)
            try:
                self._spawn()
                self._wait_healthy()
                if self.on_restart is not None:
                    self.on_restart()
            except Exception as exc:  # keep watching: the next check tries again
                log.error("restarting the serving engine: %s", exc)

    def _terminate(self, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)
        except ProcessLookupError:
            pass

    def _tail(self) -> str:
        if not self.log_file or not Path(self.log_file).is_file():
            return ""
        lines = Path(self.log_file).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        return "\nLast lines of its log:\n" + "\n".join(lines) if lines else ""


def start_vllm(settings, *, base: str | None, host: str, port: int, gpus: int = 1, on_restart=None) -> Supervisor:
    """vLLM serving ``base`` (default: the settings' default base) at ``host:port``,
    supervised; returns once it answers ``/health``. Its log: ``<home>/.tunelab/vllm.log``."""
    require_vllm()
    ref = resolve_base(base or settings.default_base, settings)
    command = vllm_command(str(ref.path), ref.name, host=host, port=port, api_key=api_token(settings), gpus=gpus,
                           max_rank=max_lora_rank(settings.paths.adapters))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log_file = settings.paths.home / ".tunelab" / "vllm.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return Supervisor(command, f"http://{shown}:{port}", env=vllm_environment(), log_file=log_file,
                      on_restart=on_restart).start()
