"""bench/train.py: its baseline is plain TRL at TRL's defaults, and a whole run on the tiny
model trains both sides once per seed and pairs their eval losses by seed."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tests.builders import run_bench

# what a fair comparison must set; every other SFTConfig field stays TRL's default
SET_BY_THE_COMPARISON = {"output_dir", "num_train_epochs", "use_cpu", "per_device_train_batch_size",
                         "learning_rate", "seed", "report_to", "disable_tqdm", "save_strategy", "max_length"}


def test_the_baseline_keeps_every_trl_default_but_the_compared_settings(tmp_path):
    from trl import SFTConfig

    from bench.train import plain_sft_config

    ours = plain_sft_config(work=tmp_path, batch_size=4, learning_rate=3e-4, seed=7, max_length=256)
    trl_default = SFTConfig(output_dir=str(tmp_path / "elsewhere"), use_cpu=ours.use_cpu)  # (refused without it here)
    moved = {f.name for f in dataclasses.fields(SFTConfig)
             if f.name not in SET_BY_THE_COMPARISON and getattr(ours, f.name) != getattr(trl_default, f.name)}
    assert not moved, {name: (getattr(ours, name), getattr(trl_default, name)) for name in moved}
    # the precision above all: TRL trains in bf16 autocast by default, on CPU too
    assert ours.bf16 == trl_default.bf16 and ours.gradient_checkpointing == trl_default.gradient_checkpointing
    assert (ours.per_device_train_batch_size, ours.learning_rate, ours.seed, ours.max_length) == (4, 3e-4, 7, 256)


def test_seeds_are_read_from_a_comma_list_and_a_bad_one_says_how_to_write_them():
    from bench.train import _seeds

    assert _seeds("42,1,2") == [42, 1, 2] and _seeds("5") == [5]
    for bad in ("42,x", "", "1,1"):
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds 42,1,2"):
            _seeds(bad)


def test_a_run_trains_both_once_per_seed_and_pairs_their_losses(tiny_llama, tmp_path):
    result = run_bench("train.py", "--base", str(tiny_llama), "--rows", "48", "--seeds", "3,4", tmp_path=tmp_path)
    ours, baseline = result["ours"]["per_seed"], result["baseline"]["per_seed"]
    assert [r["seed"] for r in ours] == [r["seed"] for r in baseline] == [3, 4] == result["seeds"]
    assert ours[0]["eval_loss"] != ours[1]["eval_loss"]  # the seed reaches the run
    ratios = [o["eval_loss"] / b["eval_loss"] for o, b in zip(ours, baseline)]
    assert result["eval_loss_ratio"] == pytest.approx(sum(ratios) / 2)
    lo, hi = result["eval_loss_ratio_ci95"]
    assert lo <= min(ratios) <= max(ratios) <= hi
    assert result["ours"]["eval_loss"] == pytest.approx(sum(r["eval_loss"] for r in ours) / 2)
    assert result["baseline"]["settings"]["bf16"] is True  # TRL's default, not overridden
    assert result["ours"]["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in ours))
