"""Stop on evidence: keep training while the held-out loss falls, keep the best weights.

:class:`KeepBest` is a trainer callback. At every evaluation it compares the held-out
(answer-only) loss with the best so far: a lower loss becomes the best, and its LoRA
weights (the only trained parameters) are copied aside in memory; ``patience``
evaluations in a row without a meaningful improvement (``min_improvement``, relative)
stop the run, and so does a held-out loss at or below ``settled_loss`` (nats per answer
token): the held-out answers are learned, and more steps only sharpen them (on TuneLab's
own tasks the unseen rows stopped improving there, ``bench/quality_curve.py``). A time
budget (training seconds, evaluation excluded) stops it too, after one last evaluation.
When training ends, :meth:`KeepBest.restore` puts the best weights back, so the adapter
written is the one that judged best, not the last one.

The epoch count of the run is then a ceiling, not a promise. A run resumed from a
checkpoint starts its best-so-far afresh (the snapshot lives in memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import TrainerCallback

STOPPED_BY_LOSS = "the held-out loss stopped falling"
STOPPED_BY_BUDGET = "the time budget was spent"
STOPPED_AT_CEILING = "the epoch ceiling was reached"
STOPPED_SETTLED = "the held-out answers were learned (held-out loss at or below {loss:g})"


class KeepBest(TrainerCallback):
    """Early stopping on the held-out loss with a best-weights snapshot and a time budget.

    ``model`` is set once the trainer has wrapped it (the peft model whose trainable
    parameters are snapshotted). ``eval_seconds`` returns the seconds spent evaluating so
    far, which the budget does not count. Every rank sees the same gathered eval loss, so
    distributed ranks stop at the same step.
    """

    def __init__(self, *, patience: int = 2, min_improvement: float = 0.005, time_budget_s: float | None = None,
                 settled_loss: float | None = None, eval_seconds: Callable[[], float] = lambda: 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.patience, self.min_improvement, self.time_budget_s = patience, min_improvement, time_budget_s
        self.settled_loss = settled_loss
        self.eval_seconds, self.clock = eval_seconds, clock
        self.model: torch.nn.Module | None = None
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.last_step: int | None = None
        self.reason = STOPPED_AT_CEILING
        self._bar: float | None = None  # the loss an evaluation must beat to reset the patience
        self._misses = 0
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = self.clock()

    def training_seconds(self) -> float:
        return self.clock() - self._started - self.eval_seconds()

    def on_step_end(self, args, state, control, **kwargs):
        if self.time_budget_s is not None and self.training_seconds() >= self.time_budget_s \
                and not control.should_training_stop:
            self.reason = STOPPED_BY_BUDGET
            control.should_training_stop = True
            control.should_evaluate = True  # judge the last weights against the best before stopping

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        loss = float(loss)
        self.last_step = state.global_step
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_step = loss, state.global_step
            self._take_snapshot()
        if self.settled_loss is not None and loss <= self.settled_loss and not control.should_training_stop:
            self.reason = STOPPED_SETTLED.format(loss=self.settled_loss)
            control.should_training_stop = True
            return
        if self._bar is None or loss < self._bar * (1 - self.min_improvement):
            self._bar, self._misses = loss, 0
            return
        self._misses += 1
        if self._misses >= self.patience and not control.should_training_stop:
            self.reason = STOPPED_BY_LOSS
            control.should_training_stop = True

    def _take_snapshot(self) -> None:
        if self.model is None:
            return
        self._snapshot = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def restore(self, current_step: int) -> bool:
        """Put the best weights back; True when they are not the weights at ``current_step``."""
        if self.model is None or self._snapshot is None or self.best_step == current_step:
            return False
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self._snapshot:
                    p.copy_(self._snapshot[name])
        return True

    def summary(self) -> dict:
        """What ``tunelab.json`` records about the stop."""
        return {"best_step": self.best_step, "best_eval_loss": self.best_loss, "stopped_because": self.reason,
                "time_budget_s": self.time_budget_s, "patience": self.patience, "settled_loss": self.settled_loss}
