"""One thread of a serving process owns torch's intra-op threads; every other thread gets one.

torch's CPU intra-op pool is OpenMP's (libgomp), and OpenMP keeps one pool per thread
that runs parallel ops. libgomp lets idle pool threads spin, waiting for the next op,
only while all pools together hold no more threads than there are cores; past that it
puts them to sleep after a short spin, and every parallel op then pays futex wake-ups:
a second pool (the one of the thread that had loaded the model) made the engine's
small decode steps markedly slower (docs/performance.md, Serving on CPU, has the figures).

So a process that serves: every thread starts with one intra-op thread (no pool at
all), and the engine's scheduler thread, which runs every forward pass, alone takes
its ``threads``. ``torch.set_num_threads`` sets both the calling thread's count and
the default that other threads take at their first parallel op, and OpenMP counts are
per thread, so the default is put back to 1 from a short-lived thread.

Between processes: on a few cores a training step and a generating engine slow each
other down several times (both want every core, and torch's pools spin while they wait;
a 32-token answer took 4x its idle time while a run trained). So the engine keeps a flag
file in the home (``settings.paths.serving_busy``, :class:`ServingFlag`) up from a
request's arrival until it has nothing left to do, and a CPU training run looks at it
before each step (one ``stat``, :class:`CoreYield`) and waits while it is up: the answer
gets the cores, and the run is slowed by about the time the answers took. A flag left by
an engine that died is ignored once it is older than ``stale_s``, and no wait lasts longer
than ``max_wait_s``, so training always moves on. This module loads torch only inside the
functions that need it, so the light training worker can use the flags.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def single_threaded_by_default() -> None:
    """Threads that run their first torch op from now on use one intra-op thread (this one too).

    Call it at the start of a serving process, before the model loads, so that the
    loading thread never builds a pool of its own.
    """
    import torch  # heavy: only here and below, so the training worker may use the flags

    torch.set_num_threads(1)


def own_intraop_threads(threads: int) -> None:
    """Give the calling thread ``threads`` intra-op threads and leave every other thread's default at 1."""
    import torch

    torch.set_num_threads(threads)
    # a thread takes its count from the default at its first torch use (get_num_threads is one):
    # make that happen now, while the default is `threads`, or the reset below would apply here too
    torch.get_num_threads()
    helper = threading.Thread(target=torch.set_num_threads, args=(1,), name="tunelab-torch-default")
    helper.start()
    helper.join()


def set_cpu_threads(device: str) -> None:
    """On CPU use every core this process may run on, shared between local ranks
    (a training process; OMP_NUM_THREADS, when set, wins)."""
    if device != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    import torch

    torch.set_num_threads(max(1, cores // max(1, local_world)))


# --- between processes: the serving engine's answers go before a training step -------------------


class ServingFlag:
    """The engine's side: a flag file that is up while requests are waiting or generating."""

    def __init__(self, path: Path | None, refresh_s: float = 10.0):
        self.path = Path(path) if path else None
        self.up = False
        self.refresh_s = refresh_s
        self._written = 0.0

    def set(self, busy: bool) -> None:
        """Raise or lower the flag; only a change touches the disk (and, while it stays up,
        a refresh every ``refresh_s``, so a long busy spell never looks stale)."""
        if self.path is None:
            return
        if busy == self.up and not (busy and time.monotonic() - self._written > self.refresh_s):
            return
        self.up = busy
        self._written = time.monotonic()
        try:
            if busy:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(str(os.getpid()))
            else:
                self.path.unlink(missing_ok=True)
        except OSError:  # a read-only home must not stop serving
            pass


class CoreYield:
    """The training run's side: before a step, wait while the serving engine is generating."""

    def __init__(self, path: Path | None, *, poll_s: float = 0.02, max_wait_s: float = 20.0,
                 stale_s: float = 120.0):
        self.path = Path(path) if path else None
        self.poll_s, self.max_wait_s, self.stale_s = poll_s, max_wait_s, stale_s
        self.waited_s = 0.0  # in all
        self.waits = 0

    def busy(self) -> bool:
        if self.path is None:
            return False
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return False
        return age < self.stale_s

    def __call__(self) -> float:
        """Wait while the flag is up (at most ``max_wait_s``); returns the seconds waited."""
        if not self.busy():
            return 0.0
        started = time.perf_counter()
        while self.busy() and time.perf_counter() - started < self.max_wait_s:
            time.sleep(self.poll_s)
        waited = time.perf_counter() - started
        self.waited_s += waited
        self.waits += 1
        return waited
