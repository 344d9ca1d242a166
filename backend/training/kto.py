"""A preference round on single votes: TRL's ``KTOTrainer`` continuing from a finished adapter.

KTO (Kahneman–Tversky Optimization, Ethayarajh et al. 2024) learns from answers rated alone,
👍 or 👎, where DPO needs one answer of each on the same prompt. It is what a round trains on
when the ratings make too few pairs but enough single votes (:mod:`backend.studio.rounds`
chooses). Input is a file of normalized unpaired votes (:mod:`backend.data.preference`: the
prompt as chat turns, ``completion`` as one assistant turn, ``label`` True for 👍).

What every round does (the parent as a trainable PEFT model; TRL 1.16's ``KTOTrainer``, like
its ``DPOTrainer``, adds a frozen copy of it named ``ref`` and computes the reference
log-probabilities with it, so the reference is the adapter before the round, checked;
progress, cancel, the folder written) is :func:`backend.training.preference_round.train_round`'s.

KTO's own needs, met here:

* its reference point (the KL term) is estimated from each answer paired with *another*
  prompt of its batch, so a batch holds 2 or more votes (``RunSpec`` refuses 1, as TRL does)
  and TRL reads the rows in order (no shuffling of its own): the votes are ordered here
  (:func:`spread`, with the spec's seed) so a batch mixes 👍 and 👎 and prompts;
* unequal counts: the 👍 and 👎 losses are weighted so both sides weigh alike
  (``desirable_weight * n_up`` equal to ``undesirable_weight * n_down``, inside the
  [1, 4/3] range the KTO paper advises and TRL checks), unless the spec sets the weights.

The new adapter's ``tunelab.json`` records ``hyperparameters.method: "kto"``, ``parent``,
the 👍 and 👎 counts, the weights and the rating ids the votes came from.
"""

from __future__ import annotations

import random
from pathlib import Path

from trl import KTOConfig, KTOTrainer

from backend.data.preference import MIN_EACH, MIN_VOTES, enough_votes, more_votes, read_pairs
from backend.errors import DataError
from backend.hparams import RunSpec
from backend.training.preference_round import RoundCounters, rating_ids, train_round
from backend.words import counted


class RoundKTOTrainer(RoundCounters, KTOTrainer):
    """KTOTrainer with the counters :class:`ProgressCallback` reads."""


def loss_weights(spec: RunSpec, up: int, down: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): the spec's where set (the other one 1), else the
    rarer side weighted majority/minority so 👍 and 👎 pull alike."""
    given = spec.train.desirable_weight, spec.train.undesirable_weight
    if any(w is not None for w in given):
        return tuple(1.0 if w is None else float(w) for w in given)
    if not up or not down:
        return 1.0, 1.0
    return (down / up, 1.0) if down > up else (1.0, up / down)


def spread(rows: list[dict], *, seed: int) -> list[dict]:
    """The votes in the order TRL reads them (it does not shuffle for KTO): each side shuffled,
    then interleaved in proportion, so a batch mixes 👍 and 👎 and prompts, not one prompt's
    answers in a row."""
    rng = random.Random(seed)
    keyed = []
    for side in ([r for r in rows if r["label"]], [r for r in rows if not r["label"]]):
        rng.shuffle(side)
        keyed += [((i + rng.random()) / len(side), row) for i, row in enumerate(side)]
    return [row for _, row in sorted(keyed, key=lambda pair: pair[0])]


def train_kto_adapter(spec: RunSpec, *, votes_file: Path, **kwargs) -> dict:
    """Train one KTO round from ``parent_dir`` on ``votes_file`` and write ``out_dir`` (the
    keyword arguments of :func:`~backend.training.preference_round.train_round`).

    Returns the metadata written to ``tunelab.json``. Too few votes (fewer than
    :data:`MIN_VOTES`, or fewer than :data:`MIN_EACH` of either kind) is a :class:`DataError`."""
    votes = read_pairs(votes_file)
    up = sum(bool(v["label"]) for v in votes)
    down = len(votes) - up
    if not enough_votes(up, down):
        raise DataError(f"{counted(len(votes), 'vote')} ({up} 👍, {down} 👎) in {Path(votes_file).name}; a KTO round "
                        f"needs at least {MIN_VOTES} with at least {MIN_EACH} of each, so {more_votes(up, down)}.",
                        fix="Rate more answers 👍 or 👎, then export again.")
    rows = spread([{"prompt": v["prompt"], "completion": v["completion"], "label": bool(v["label"])} for v in votes],
                  seed=spec.train.seed)
    desirable, undesirable = loss_weights(spec, up, down)

    def make_trainer(*, args: dict, **trainer_kwargs) -> RoundKTOTrainer:
        config = KTOConfig(**args, desirable_weight=desirable, undesirable_weight=undesirable)
        return RoundKTOTrainer(ref_model=None, args=config, **trainer_kwargs)

    return train_round(spec, rows=rows, make_trainer=make_trainer,
                       record={"votes": len(votes), "up": up, "down": down, "rating_ids": rating_ids(votes),
                               "desirable_weight": desirable, "undesirable_weight": undesirable},
                       metrics={"reward_chosen": "rewards/chosen", "reward_rejected": "rewards/rejected",
                                "reward_margin": "rewards/margins", "kl": "kl"},
                       **kwargs)
