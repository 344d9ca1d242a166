"""The configuration a run gets when no knob is set, chosen from the data.

Pure: numbers in (how many training rows, how long their answers are, the task kind,
whether a GPU trains), a :class:`Defaults` out with the reason for every choice, which
the plan card shows. The rules were measured, not guessed: ``bench/quality.py`` trains
TuneLab's own small tasks (3- and 5-label classification, JSON extraction with an
optional field, a style goal) and scores the adapters on unseen rows written from other
templates; docs/training.md has the table behind each rule. In short:

* **rank 16, alpha 32.** At the same training time r16 learned the classification and
  extraction tasks better than r8 (the update's scale, alpha / r = 2, is kept).
* **learning rate 5e-4**, short answers or long. A LoRA of a small model on 50-500 rows
  needs a higher rate than full fine-tuning; at 2e-4 with TRL-like epochs the 3-label task
  stayed at two thirds on unseen rows. Long answers used to get 2e-4 (more loss tokens per
  step, less noise: a guess); measured on the ~140-token listings task, 5e-4 wrote 12 of 20
  unseen listings right after 30 steps where 2e-4 wrote none, and more at every step after.
* **batch 4 below 200 rows** (8 from there): small data needs steps more than big batches.
* **NEFTune noise 5** on the input embeddings while training: rows held back from the
  file share its phrasings, new inputs do not; with the noise the 3-label task went from
  27/30 to 29/30 on unseen rows, the 5-label and extraction tasks stayed within a row.
  Suspected of the words the extraction and listings adapters copy wrong, it was checked
  without: those runs copied no better at any step (docs/training.md).
* **stop on evidence.** The epoch count is a ceiling sized so the run can take about
  :data:`TARGET_STEPS` optimizer steps (3 to 10 epochs); the held-out loss is measured
  about once an epoch, the best weights are kept, and two evaluations without
  improvement stop the run (:mod:`backend.training.early_stop`), as do held-out answers
  that are learned whole: a loss per answer (the per-token loss times the mean answer
  length) at or below :data:`SETTLED_ANSWER_NATS`, each answer about 98% likely. On the
  classification and extraction tasks the unseen rows stopped improving 30-40 steps into
  runs of 120, where the held-out loss fell below ~0.01 per token, while it went on
  falling by far more than patience forgives, so those runs used to train to the ceiling
  (``bench/quality_curve.py``); short answers now stop there, long ones later. A time budget
  caps it: :data:`CPU_BUDGET_S` of training on a CPU, :data:`GPU_BUDGET_S` on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from backend.hparams import LoraSpec, TrainSpec

RANK, ALPHA = 16, 32
LEARNING_RATE = 5e-4
SMALL_DATA_ROWS = 200
TARGET_STEPS = 120
MIN_EPOCHS, MAX_EPOCHS = 3.0, 10.0
PATIENCE = 2
SETTLED_ANSWER_NATS = 0.02  # held-out loss per whole answer at which the answers are learned (~98% likely)
ASSUMED_ANSWER_TOKENS = 4.0  # before data is imported
NEFTUNE_ALPHA = 5.0
CPU_BUDGET_S = 600.0
GPU_BUDGET_S = 1800.0


@dataclass(frozen=True)
class Defaults:
    """The chosen configuration and, per knob, why."""

    lora: LoraSpec
    train: TrainSpec
    why: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The reasons, one line per knob, for the plan card."""
        return [f"{knob}: {reason}" for knob, reason in self.why.items()]


def settled_loss(mean_answer_tokens: float | None) -> float:
    """The held-out loss per answer token at which the answers are learned whole:
    :data:`SETTLED_ANSWER_NATS` spread over the mean answer's tokens (0.005 for answers of 4
    tokens, 0.00087 for 23), so a long answer is held to the same certainty as a label."""
    tokens = ASSUMED_ANSWER_TOKENS if mean_answer_tokens is None else max(1.0, float(mean_answer_tokens))
    return round(SETTLED_ANSWER_NATS / tokens, 6)


def choose(n_train: int, *, mean_answer_tokens: float | None = None, gpu: bool = False) -> Defaults:
    """The default LoRA and training knobs for ``n_train`` training rows whose answers are
    ``mean_answer_tokens`` long on average (None: unknown, treated as short)."""
    known = n_train > 0
    n_train = max(1, int(n_train))
    batch = 4 if n_train < SMALL_DATA_ROWS else 8
    steps_per_epoch = math.ceil(n_train / batch)
    epochs = float(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))
    budget = GPU_BUDGET_S if gpu else CPU_BUDGET_S
    answers = "unknown length" if mean_answer_tokens is None else f"{mean_answer_tokens:.0f} tokens on average"
    settled = settled_loss(mean_answer_tokens)
    why = {
        "rank": f"r{RANK}, alpha {ALPHA}: at equal training time it learned the measured tasks better than r8",
        "learning rate": (f"{LEARNING_RATE:g}: a small LoRA on a few hundred rows needs a high rate; on short labels "
                          "and on long formatted answers it learned more than 2e-4 on new inputs"),
        "batch": (f"{batch}: {n_train} training rows " + ("(small data needs steps more than big batches)"
                                                          if batch == 4 else "(enough rows for batches of 8)")
                  if known else f"{batch} until data is imported; then sized to it"),
        "noise": (f"NEFTune {NEFTUNE_ALPHA:g}: noise on the input embeddings while training helps new phrasings "
                  "(measured on unseen rows)"),
        "stopping": (f"at most {epochs:g} epochs (about {TARGET_STEPS} steps), stopping when the held-out loss "
                     f"stops falling (patience {PATIENCE}) or reaches {settled:.2g} per answer token (the held-out "
                     f"answers learned: {SETTLED_ANSWER_NATS:g} nats per answer of {answers}), the best weights "
                     f"kept, and within {budget / 60:g} minutes of training"),
    }
    return Defaults(
        lora=LoraSpec(r=RANK, alpha=ALPHA),
        train=TrainSpec(epochs=epochs, learning_rate=LEARNING_RATE, batch_size=batch, early_stopping=True,
                        patience=PATIENCE, settled_loss=settled, time_budget_s=budget, neftune_noise_alpha=NEFTUNE_ALPHA),
        why=why,
    )
