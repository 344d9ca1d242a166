"""A preference round on pairs: TRL's ``DPOTrainer`` continuing from a finished adapter.

Input is a file of normalized preference pairs (:mod:`backend.data.preference`: the prompt
as chat turns, ``chosen`` / ``rejected`` as one assistant turn each). What every round does
(the parent loaded as a trainable PEFT model, TRL's frozen ``ref`` copy of it as the
reference, checked; progress, cancel, the folder written) is
:func:`backend.training.preference_round.train_round`'s.

TRL's DPO defaults that are wrong for a small LoRA round are overridden from the spec:
learning rate (TRL's 1e-6 is for full fine-tuning), logging every step, no gradient
checkpointing, ``use_cpu`` without CUDA. The new adapter's ``tunelab.json`` records
``hyperparameters.method: "dpo"``, ``parent``, the pair count and the rating ids the pairs
came from.
"""

from __future__ import annotations

from pathlib import Path

from trl import DPOConfig, DPOTrainer

from backend.data.preference import MIN_PAIRS, read_pairs
from backend.errors import DataError
from backend.hparams import RunSpec
from backend.training.preference_round import RoundCounters, rating_ids, train_round
from backend.words import counted

class RoundDPOTrainer(RoundCounters, DPOTrainer):
    """DPOTrainer with the counters :class:`ProgressCallback` reads."""


def make_trainer(*, args: dict, **kwargs) -> RoundDPOTrainer:
    return RoundDPOTrainer(ref_model=None, args=DPOConfig(**args), **kwargs)


def train_dpo_adapter(spec: RunSpec, *, pairs_file: Path, **kwargs) -> dict:
    """Train one DPO round from ``parent_dir`` on ``pairs_file`` and write ``out_dir`` (the
    keyword arguments of :func:`~backend.training.preference_round.train_round`).

    Returns the metadata written to ``tunelab.json``. Fewer than :data:`MIN_PAIRS` pairs is
    a :class:`DataError`; a cancel a :class:`TrainingCancelled` (nothing written)."""
    pairs = read_pairs(pairs_file)
    if len(pairs) < MIN_PAIRS:
        raise DataError(f"{counted(len(pairs), 'preference pair')} in {Path(pairs_file).name}; a round needs at least "
                        f"{MIN_PAIRS}.", fix=f"Rate {counted(MIN_PAIRS - len(pairs), 'more prompt', 'more prompts')} with one answer 👍 and "
                        "another 👎, then export again.")
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    return train_round(spec, rows=rows, make_trainer=make_trainer,
                       record={"pairs": len(pairs), "rating_ids": rating_ids(pairs)},
                       metrics={"reward_accuracy": "rewards/accuracies", "reward_margin": "rewards/margins"},
                       **kwargs)
