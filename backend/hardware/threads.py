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
"""

from __future__ import annotations

import os
import threading

import torch


def single_threaded_by_default() -> None:
    """Threads that run their first torch op from now on use one intra-op thread (this one too).

    Call it at the start of a serving process, before the model loads, so that the
    loading thread never builds a pool of its own.
    """
    torch.set_num_threads(1)


def own_intraop_threads(threads: int) -> None:
    """Give the calling thread ``threads`` intra-op threads and leave every other thread's default at 1."""
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
    torch.set_num_threads(max(1, cores // max(1, local_world)))
