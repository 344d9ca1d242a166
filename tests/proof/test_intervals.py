"""Wilson intervals against published values, and the figures built on them."""

from __future__ import annotations

import pytest

from backend.proof.intervals import describe, scored, wilson


@pytest.mark.parametrize("correct, total, lo, hi", [
    # reference values: Wilson (1927) score interval, z = 1.96 (e.g. Newcombe 1998, Table I;
    # statsmodels proportion_confint(method="wilson"))
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 30, 0.8333, 0.9941),
    (10, 10, 0.7225, 1.0),
])
def test_wilson_matches_published_values(correct, total, lo, hi):
    got = wilson(correct, total)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_is_inside_zero_one_and_shrinks_with_rows():
    for n in (1, 5, 20, 200):
        for k in (0, n // 2, n):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson(10, 20)[1] - wilson(10, 20)[0] > wilson(100, 200)[1] - wilson(100, 200)[0]
    assert wilson(0, 0) == (0.0, 1.0)  # no rows: nothing is known


def test_scored_and_described():
    figure = scored([True] * 29 + [False])
    assert figure == {"correct": 29, "total": 30, "score": 29 / 30, "ci95": [0.8333, 0.9941]}
    assert describe(figure) == "29/30 (97%, 95% CI 83%–99%)"
    assert scored([]) == {"correct": 0, "total": 0, "score": 0.0, "ci95": [0.0, 1.0]}
