"""Shares with honest error bars: every exact-match or judged share TuneLab shows carries
its row count and a 95% Wilson score interval; and the paired test of two models scored on
the same rows (the exact sign test on the rows only one of them gets right), which is what
decides whether an adapter beats the base; and the Student-t interval of a mean of a few
repeated measurements (a benchmark's seeds)."""

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


# Student's t at 97.5% (a two-sided 95% interval) for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "n", "ci95": [lo, hi] | None}``: the mean of a few repeated measurements
    (one per seed, say) and its 95% Student-t interval, which is honest at the n of 2-5 a
    benchmark can afford; no interval from a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values: an interval needs at least one measurement")
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "n": 1, "ci95": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    df = n - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.959964 + 2.37 / df  # past 30: the normal plus its first correction
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "n": n, "ci95": [mean - half, mean + half]}


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


def sign_test_p(only_a: int, only_b: int) -> float:
    """Exact two-sided sign (McNemar) test: the chance of a split at least this uneven among
    the ``only_a + only_b`` discordant rows if either model were as likely to win each."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Two models on the same rows: how many rows only one of them gets, and the exact sign
    test on those (the rows both or neither get say nothing about which is better)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} outcomes: a paired test needs the same rows")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    both = sum(1 for x, y in zip(a, b) if x and y)
    return {"n": len(a), "both": both, "neither": len(a) - both - only_a - only_b, "only_first": only_a,
            "only_second": only_b, "p_value": float(f"{sign_test_p(only_a, only_b):.3g}")}
