"""Several training processes for one job: the same worker under ``accelerate launch`` (DDP or FSDP).

A job whose spec asks for ``processes`` > 1 is started as::

    python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m backend.training.worker JOB_ID

accelerate hands it to torchrun, which starts N ranks of the ordinary worker; each rank
trains its share of every batch and DDP averages the LoRA gradients (NCCL between GPUs,
gloo between CPU processes: transformers picks the backend from ``use_cpu``). Only rank 0
touches the store and writes the adapter (:mod:`backend.training.worker`,
:mod:`backend.training.run`); every rank stops at the same step on a cancel or a pause
(:func:`backend.training.trainer.any_rank`), and a resumed job starts all ranks again from
the run's last checkpoint.

Whether the ranks shard the base (FSDP) or each hold all of it (DDP) is not the launcher's
choice: every rank computes the same recipe (:mod:`backend.training.recipe`, from the
device, the spec and the memory estimate) and hands it to the trainer as transformers'
``fsdp`` / ``fsdp_config`` (:func:`backend.training.run.distributed_fields`), which become
accelerate's FSDP plugin. The command is the same for both.

torchrun puts every rank in a process group of its own, so the job runner cannot reach
them through the launcher's group. Instead every process of the job carries a tag in its
environment (:data:`RUN_TAG`, inherited from the launcher), and :func:`job_processes`
finds them by it in ``/proc``: a cancel or a pause signals every rank, and once the
launcher has exited, whatever is left of the job is killed, so a crash of one rank never
leaves another behind. Nothing here imports torch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

RUN_TAG = "TUNELAB_RUN_TAG"  # set by the job runner on a multi-process job, inherited by every rank
WORKER_MODULE = "backend.training.worker"


def processes_of(request: dict) -> int:
    """How many processes a job's request asks for (1 unless its spec says more)."""
    train = ((request or {}).get("spec") or {}).get("train") or {}
    return max(1, int(train.get("processes") or 1))


def worker_command(python: str, job_id: int, processes: int = 1) -> list[str]:
    """The command that runs job ``job_id``: the worker itself, or ``processes`` ranks of it
    under ``accelerate launch`` (a free port is picked for the ranks' rendezvous)."""
    worker = ["-m", WORKER_MODULE, str(job_id)]
    if processes <= 1:
        return [python, *worker]
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", *worker]


def nvidia_gpu_present(dev: Path = Path("/dev")) -> bool:
    """Whether this machine trains on an NVIDIA GPU, told without torch (the job runner lives in
    the app process): the driver's device nodes exist and CUDA_VISIBLE_DEVICES does not hide
    them. Decides whether the worker gets the CPU allocator settings."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return (dev / "nvidiactl").exists() and any(dev.glob("nvidia[0-9]*"))


def new_tag(job_id: int) -> str:
    return f"job{job_id}-{os.getpid()}-{time.monotonic_ns()}"


def job_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``RUN_TAG=tag`` (this user's, from ``/proc``)."""
    needle = f"{RUN_TAG}={tag}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"\0" + needle in b"\0" + (entry / "environ").read_bytes() + b"\0" and \
                    (entry / "stat").read_text().split(") ", 1)[-1][:1] != "Z":
                found.append(int(entry.name))
        except OSError:  # gone, or another user's
            continue
    return sorted(found)


def signal_job(tag: str, sig: int, *, skip: int | None = None) -> list[int]:
    """Send ``sig`` to every process of the job (but ``skip``); returns the pids signalled."""
    sent = []
    for pid in job_processes(tag):
        if pid == skip:
            continue
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except OSError:
            pass
    return sent


def kill_job(tag: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL whatever is left of the job and wait (up to ``timeout``) until none is; returns
    the pids that had been left."""
    left = signal_job(tag, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while left and job_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
