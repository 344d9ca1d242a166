"""bench/batches.py on the tiny model: every variant trains once per seed with its own
batching, and the equal-time variant trains the epochs that fit the random run's time."""

from __future__ import annotations


import pytest

from tests.builders import run_bench


def test_each_variant_batches_its_own_way_and_is_paired_with_length_by_seed(tiny_llama, tmp_path):
    result = run_bench("batches.py", "--base", str(tiny_llama), "--rows", "48", "--seeds", "5", tmp_path=tmp_path)
    runs = result["runs"]
    failed = {v: r[0]["error"] for v, r in runs.items() if "error" in r[0]}
    assert not failed, failed  # padding-free batches run on a CPU too
    losses = {v: r[0]["eval_loss"] for v, r in runs.items()}
    assert losses["random"] != losses["length"]  # other batches, another run
    # packed rows attended example by example learn what the same random batches padded learn
    assert losses["padding_free"] == pytest.approx(losses["random"], rel=0.02)
    timed = runs["length_at_random_time"][0]
    assert timed["epochs"] == round(runs["random"][0]["train_seconds"] / runs["length"][0]["train_seconds"], 2)
    summary = result["summary"]["random"]
    assert summary["eval_loss_over_length"]["mean"] == pytest.approx(losses["random"] / losses["length"])
    assert result["summary"]["length"]["eval_loss_over_length"]["mean"] == pytest.approx(1.0)
