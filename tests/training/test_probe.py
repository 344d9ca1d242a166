"""The speed probe runs in a child process (backend/training/probe.py): it measures a real
speed for the tiny Llama without loading a model into the calling process, and a probe that
fails leaves the estimate empty instead of failing the import."""

from __future__ import annotations

import sys

from backend.bases.resolve import BaseRef
from backend.hparams import LoraSpec
from backend.training.probe import measure


def test_the_probe_measures_in_a_child_and_loads_nothing_here(tiny_llama):
    loaded_before = "peft" in sys.modules and "backend.training.run" in sys.modules
    ref = BaseRef(spec=str(tiny_llama), kind="folder", name="tiny-llama", path=str(tiny_llama))
    speed = measure(ref, base=str(tiny_llama), lora=LoraSpec(r=4, alpha=8), batch_size=2, tokens_per_example=24,
                    max_length=64)
    assert speed is not None and speed.s_per_token > 0 and speed.fixed_s > 0
    assert speed.base == str(tiny_llama) and "probe" in speed.source
    if not loaded_before:  # this process did not import the training run to measure
        assert "backend.training.run" not in sys.modules


def test_a_probe_that_fails_leaves_no_estimate(tmp_path):
    ref = BaseRef(spec="gone", kind="folder", name="gone", path=str(tmp_path / "no-such-model"))
    assert measure(ref, base="gone", lora=LoraSpec(), batch_size=2, tokens_per_example=24, max_length=64) is None
