"""bench/stop_replay.py: TuneLab's own early stop (KeepBest) replayed over recorded held-out
losses, so a stop rule is judged on every recorded task without training anything."""

from __future__ import annotations

from bench.stop_replay import judge_rule, replay


def _falling(rates: list[float], start: float = 1.0) -> list[dict]:
    losses, loss = [], start
    for step, rate in enumerate(rates, start=1):
        loss *= 1 - rate
        losses.append({"step": 15 * step, "eval_loss": loss})
    return losses


def test_a_slow_fall_runs_to_the_ceiling_under_a_small_bar_and_stops_under_a_higher_one():
    held_out = _falling([0.5, 0.3, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])  # then 1% an evaluation
    assert replay(held_out, patience=2, min_improvement=0.005, settled_loss=None) == {
        "stop_step": 120, "kept_step": 120, "stopped_because": "the epoch ceiling was reached"}
    stopped = replay(held_out, patience=2, min_improvement=0.05, settled_loss=None)
    assert stopped == {"stop_step": 60, "kept_step": 60, "stopped_because": "the held-out loss stopped falling"}


def test_a_settled_loss_stops_at_the_first_evaluation_at_or_below_it():
    held_out = [{"step": 10, "eval_loss": 0.4}, {"step": 20, "eval_loss": 0.004}, {"step": 30, "eval_loss": 0.001}]
    result = replay(held_out, patience=2, min_improvement=0.005, settled_loss=0.005)
    assert (result["stop_step"], result["kept_step"]) == (20, 20) and "learned" in result["stopped_because"]


def test_a_rule_is_judged_by_the_unseen_score_at_the_kept_step_and_the_seconds_to_its_stop():
    held_out = [{"step": 10, "eval_loss": 0.5}, {"step": 20, "eval_loss": 0.3}, {"step": 30, "eval_loss": 0.31},
                {"step": 40, "eval_loss": 0.32}, {"step": 50, "eval_loss": 0.2}]
    curve = [{"step": s, "unseen": {"correct": c, "total": 20}} for s, c in ((10, 3), (20, 12), (30, 14), (40, 15),
                                                                            (50, 16))]
    task = {"held_out_loss": held_out, "curve": curve, "seconds_per_step": 2.0}
    result = judge_rule(task, patience=2, min_improvement=0.005, settled_loss=None)
    assert (result["stop_step"], result["kept_step"], result["train_seconds"]) == (40, 20, 80.0)
    assert result["unseen"]["correct"] == 12 and result["unseen"]["total"] == 20
    assert result["unseen"]["ci95"][0] < 0.6 < result["unseen"]["ci95"][1]


def test_a_kept_step_without_a_copy_is_scored_by_the_copy_before_it():
    """A run the time budget cut short evaluated at its last step (119) but copied no weights
    there: the replay says so and scores the copy before."""
    held_out = [{"step": 15, "eval_loss": 0.9}, {"step": 30, "eval_loss": 0.2}, {"step": 119, "eval_loss": 0.1}]
    curve = [{"step": 15, "unseen": {"correct": 0, "total": 20}}, {"step": 30, "unseen": {"correct": 13, "total": 20}}]
    result = judge_rule({"held_out_loss": held_out, "curve": curve, "seconds_per_step": 5.0}, patience=2,
                        min_improvement=0.005, settled_loss=None)
    assert (result["kept_step"], result["unseen_scored_at"], result["unseen"]["correct"]) == (119, 30, 13)
