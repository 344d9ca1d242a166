"""Shares with honest error bars: every exact-match or judged share TuneLab shows carries
its row count and a 95% Wilson score interval."""

from __future__ import annotations

import math
from typing import Any, Sequence


def wilson(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``total`` trials (95% by
    default): unlike ``p ± z·√(p(1-p)/n)`` it stays inside [0, 1] and is honest at 0/n and
    n/n, which is where small held-out sets live."""
    if total <= 0:
        return 0.0, 1.0
    if correct <= 0:  # the closed forms, without rounding error at the edges
        return 0.0, z * z / (total + z * z)
    if correct >= total:
        return total / (total + z * z), 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def scored(hits: Sequence[bool]) -> dict[str, Any]:
    """``{"correct", "total", "score", "ci95": [lo, hi]}`` of a list of per-row outcomes."""
    correct, total = int(sum(bool(h) for h in hits)), len(hits)
    lo, hi = wilson(correct, total)
    return {"correct": correct, "total": total, "score": correct / total if total else 0.0,
            "ci95": [round(lo, 4), round(hi, 4)]}


def describe(figure: dict) -> str:
    """``29/30 (97%, 95% CI 83–99%)``."""
    lo, hi = figure.get("ci95") or wilson(figure["correct"], figure["total"])
    return f"{figure['correct']}/{figure['total']} ({figure['score']:.0%}, 95% CI {lo:.0%}–{hi:.0%})"
