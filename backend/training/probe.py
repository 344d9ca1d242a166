"""The speed probe in a process of its own: a few timed training steps of a base
(:func:`backend.training.run.probe_speed`) for the plan card's first time estimate.

The page asks for it while importing data. Run inside the app process it would load a
second copy of the base there, spin torch threads beside the serving engine, and a
Ctrl-C during it aborted the whole process ("terminate called without an active
exception"); here it is a child the app waits for (:func:`measure`), which reads the
request as JSON on stdin and prints the measured :class:`~backend.training.estimate.Speed`
as JSON on its last line. A probe that fails or times out leaves the estimate to the first
finished run: it never fails the import.

    python -m backend.training.probe < request.json
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict

from backend.bases.resolve import BaseRef
from backend.hparams import LoraSpec
from backend.training.estimate import Speed

log = logging.getLogger("tunelab.probe")
TIMEOUT_S = 300.0


def measure(base_ref: BaseRef, *, base: str, lora: LoraSpec, batch_size: int, tokens_per_example: float,
            max_length: int, trust_remote_code: bool = False, timeout: float = TIMEOUT_S) -> Speed | None:
    """The probe's :class:`Speed`, measured in a child process; None (logged) if it failed."""
    request = {"base_ref": asdict(base_ref), "base": base, "lora": lora.model_dump(), "batch_size": batch_size,
               "tokens_per_example": tokens_per_example, "max_length": max_length,
               "trust_remote_code": trust_remote_code}
    try:
        done = subprocess.run([sys.executable, "-m", "backend.training.probe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("the speed probe of %s took over %.0f s; the estimate waits for a finished run", base, timeout)
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log.warning("the speed probe of %s failed (exit %s): %s", base, done.returncode, done.stderr[-500:])
        return None
    return Speed.model_validate_json(lines[-1])


def main() -> None:  # pragma: no cover - run as a child process by measure(), tested through it
    from backend.training.run import probe_speed  # torch, peft: only in the child

    request = json.loads(sys.stdin.read())
    speed = probe_speed(BaseRef(**request["base_ref"]), base=request["base"], lora=LoraSpec(**request["lora"]),
                        batch_size=request["batch_size"], tokens_per_example=request["tokens_per_example"],
                        max_length=request["max_length"], trust_remote_code=request["trust_remote_code"])
    print(speed.model_dump_json(), flush=True)


if __name__ == "__main__":
    main()
