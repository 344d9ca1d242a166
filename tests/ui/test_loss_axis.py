"""The loss chart's y-axis never goes below 0: a loss is never negative."""

from __future__ import annotations

import re

from ui.common import loss_svg


def _axis_labels(svg: str) -> list[float]:
    return [float(v) for v in re.findall(r"text-anchor='end' fill='currentColor'>(-?\d+\.\d{3})</text>", svg)]


def test_a_loss_falling_near_zero_keeps_the_axis_at_or_above_zero():
    history = [{"step": s, "loss": v, "eval_loss": None} for s, v in enumerate([2.4, 0.9, 0.2, 0.01], 1)]
    labels = _axis_labels(loss_svg(history))
    assert len(labels) == 5 and min(labels) == 0.0 and max(labels) > 2.4


def test_a_flat_small_loss_does_not_pad_below_zero():
    history = [{"step": 1, "loss": 0.05, "eval_loss": 0.05}, {"step": 2, "loss": 0.05, "eval_loss": None}]
    labels = _axis_labels(loss_svg(history))
    assert min(labels) == 0.0 and all(v >= 0 for v in labels)
    points = re.findall(r"cy='(-?[\d.]+)'", loss_svg(history))
    assert all(0 <= float(y) <= 220 for y in points)  # every point drawn inside the chart


def test_a_loss_far_from_zero_keeps_its_close_range():
    history = [{"step": 1, "loss": 3.0, "eval_loss": None}, {"step": 2, "loss": 2.9, "eval_loss": None}]
    assert min(_axis_labels(loss_svg(history))) > 2.5  # the axis is not stretched to 0 for no reason
