"""Stop on evidence: the KeepBest callback against scripted losses and a clock."""

from __future__ import annotations

import torch
from transformers import TrainerControl, TrainerState

from backend.training.early_stop import (STOPPED_AT_CEILING, STOPPED_BY_BUDGET, STOPPED_BY_LOSS, STOPPED_SETTLED,
                                         KeepBest)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _model():
    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)  # frozen: never snapshotted
    return model


def _evaluate(keep, state, control, step, loss, model=None):
    state.global_step = step
    if model is not None:
        with torch.no_grad():
            model.weight.fill_(float(step))  # the weights "at" this step
    keep.on_evaluate(None, state, control, metrics={"eval_loss": loss})


def test_it_stops_after_patience_evaluations_without_improvement_and_restores_the_best():
    model = _model()
    keep = KeepBest(patience=2)
    keep.model = model
    state, control = TrainerState(), TrainerControl()
    for step, loss in ((10, 1.0), (20, 0.5), (30, 0.499), (40, 0.7)):
        _evaluate(keep, state, control, step, loss, model)
        if step < 40:
            assert not control.should_training_stop
    # 0.499 is lower (it becomes the best) but not a meaningful improvement: two misses stop
    assert control.should_training_stop and keep.reason == STOPPED_BY_LOSS
    assert keep.best_step == 30 and keep.best_loss == 0.499
    assert keep.restore(current_step=40) and torch.all(model.weight == 30.0)
    assert not keep.restore(current_step=30)  # already the best
    assert keep.summary()["stopped_because"] == STOPPED_BY_LOSS


def test_a_falling_loss_keeps_training_to_the_ceiling():
    keep = KeepBest(patience=1)
    keep.model = _model()
    state, control = TrainerState(), TrainerControl()
    for step, loss in ((1, 1.0), (2, 0.8), (3, 0.6), (4, 0.4)):
        _evaluate(keep, state, control, step, loss)
    assert not control.should_training_stop and keep.reason == STOPPED_AT_CEILING and keep.best_step == 4


def test_a_held_out_loss_at_the_settled_mark_stops_a_run_that_still_improves():
    """The 5-label task's held-out losses every 10 steps (bench/results/quality-curve.json):
    still falling by far more than 0.5% an evaluation, so patience would never stop it; the
    settled mark stops at the first evaluation at or below it, keeping those weights."""
    model = _model()
    keep = KeepBest(patience=2, settled_loss=0.01)
    keep.model = model
    state, control = TrainerState(), TrainerControl()
    for step, loss in ((10, 0.412), (20, 0.036), (30, 0.0031)):
        assert not control.should_training_stop
        _evaluate(keep, state, control, step, loss, model)
    assert control.should_training_stop and keep.best_step == 30
    assert keep.reason == STOPPED_SETTLED.format(loss=0.01) and "learned" in keep.reason
    assert keep.summary()["settled_loss"] == 0.01 and not keep.restore(current_step=30)
    without = KeepBest(patience=2)
    control = TrainerControl()
    for step, loss in ((10, 0.412), (20, 0.036), (30, 0.0031), (40, 0.0007), (50, 0.00045)):
        _evaluate(without, state, control, step, loss)
    assert not control.should_training_stop


def test_the_time_budget_stops_and_asks_for_one_last_evaluation():
    clock, spent_evaluating = Clock(), [0.0]
    keep = KeepBest(time_budget_s=60, eval_seconds=lambda: spent_evaluating[0], clock=clock)
    state, control = TrainerState(), TrainerControl()
    keep.on_train_begin(None, state, control)
    clock.now, spent_evaluating[0] = 70.0, 20.0  # 50 s of training: under budget
    keep.on_step_end(None, state, control)
    assert not control.should_training_stop
    clock.now = 81.0
    keep.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_evaluate and keep.reason == STOPPED_BY_BUDGET
