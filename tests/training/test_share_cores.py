"""The serving engine and a CPU training run share the cores: the engine's flag is up from a
request's arrival until it has nothing left to do, a run waits before each step and each
decoder layer of a training forward pass while it is up (never on a stale flag, never past
its longest wait), and the wait is not training time."""

from __future__ import annotations

import os
import threading
import time

from backend.hardware.threads import CoreYield, ServingFlag
from backend.training.run import train_adapter
from tests.builders import folder_ref, make_engine, tiny_spec, write_color_data


def test_the_engine_raises_the_flag_while_it_answers_and_lowers_it_after(tiny_llama, tmp_path):
    flag = tmp_path / "serving-busy"
    engine = make_engine(tiny_llama, busy_flag=flag)
    try:
        seen = []
        handle = engine.submit([1, 5, 9], params=None)
        seen.append(flag.exists())  # up from the request's arrival
        handle.result()
        deadline = time.monotonic() + 5
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == [True] and not flag.exists()  # down once nothing is left to do
    finally:
        engine.stop()
    assert not flag.exists()


def test_a_run_waits_while_the_flag_is_up_and_not_on_a_stale_one(tmp_path):
    flag = tmp_path / "serving-busy"
    up = ServingFlag(flag)
    wait = CoreYield(flag, poll_s=0.01)
    assert wait() == 0.0  # no flag: no wait
    up.set(True)
    threading.Timer(0.3, up.set, args=(False,)).start()
    waited = wait()
    assert 0.25 <= waited < 2.0 and not flag.exists() and wait.waits == 1
    up.set(True)
    old = time.time() - 600
    os.utime(flag, (old, old))  # an engine that died long ago left it behind
    assert wait() == 0.0
    stuck = CoreYield(flag, poll_s=0.01, max_wait_s=0.2, stale_s=10**6)
    assert 0.2 <= stuck() < 1.0  # never waits past its longest wait


def test_a_cpu_run_waits_before_its_steps_and_does_not_count_it_as_training(tiny_llama, tmp_path):
    flag = tmp_path / "serving-busy"
    ServingFlag(flag).set(True)
    wait = CoreYield(flag, poll_s=0.01)
    calls = []

    def before_step() -> float:  # the engine answers for 0.5 s when the first step is due
        if not calls:
            threading.Timer(0.5, flag.unlink).start()
        calls.append(1)
        return wait()

    meta = train_adapter(tiny_spec("shared", tiny_llama, epochs=1), base_ref=folder_ref(tiny_llama),
                         train_file=write_color_data(tmp_path / "data"), eval_file=None,
                         out_dir=tmp_path / "adapters" / "shared", work_dir=tmp_path / "work", before_step=before_step)
    m = meta["metrics"]
    layers = 2  # the tiny Llama's decoder layers: asked before each step and before each layer of its forward
    assert len(calls) == m["steps"] * (1 + layers) and wait.waits == 1  # waited once, before the first step
    assert m["waited_for_serving_s"] == wait.waited_s >= 0.4
    assert m["train_seconds"] <= m["runtime_s"] - m["waited_for_serving_s"] + 1e-6
