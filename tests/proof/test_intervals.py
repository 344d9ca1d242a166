"""Wilson intervals against published values, the figures built on them, the paired sign
test, and the Student-t interval of a mean."""

from __future__ import annotations

import math

import pytest

from backend.proof.intervals import describe, mean_interval, paired, scored, sign_test_p, wilson


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


def test_the_sign_test_matches_the_binomial_by_hand():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 3) == 1.0
    assert sign_test_p(0, 6) == pytest.approx(2 / 64)  # 2 * 0.5**6
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)  # five rows, all one way: not yet below 5%
    assert sign_test_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test_p(9, 1) == sign_test_p(1, 9)
    assert sign_test_p(2, 8) == pytest.approx(2 * sum(math.comb(10, k) for k in range(3)) / 1024)


def test_paired_counts_only_the_rows_where_the_two_differ():
    first = [True, False, False, True, False]
    second = [True, True, True, False, False]
    result = paired(first, second)
    assert (result["both"], result["neither"], result["only_first"], result["only_second"]) == (1, 1, 1, 2)
    assert result["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="a paired test needs the same rows"):
        paired([True], [True, False])


def test_the_mean_interval_is_student_t_by_hand():
    # 1, 2, 3: mean 2, sample sd 1, t(2 df, 97.5%) = 4.303, so 2 ± 4.303 / sqrt(3)
    figure = mean_interval([1.0, 2.0, 3.0])
    assert figure["mean"] == 2.0 and figure["n"] == 3
    lo, hi = figure["ci95"]
    assert abs(lo - (2 - 4.303 / math.sqrt(3))) < 1e-9 and abs(hi - (2 + 4.303 / math.sqrt(3))) < 1e-9
    # two values: t(1 df) = 12.706, half-width 12.706 x |a - b| / 2
    assert mean_interval([1.0, 1.5])["ci95"] == pytest.approx([1.25 - 12.706 * 0.25, 1.25 + 12.706 * 0.25])
    # many values: close to the normal's 1.96
    many = mean_interval([0.0, 1.0] * 100)
    assert many["ci95"][1] - many["mean"] == pytest.approx(1.96 * math.sqrt(200 / 199 * 0.25 / 200), rel=0.01)


def test_one_measurement_has_no_interval_and_none_is_refused():
    assert mean_interval([2.5]) == {"mean": 2.5, "n": 1, "ci95": None}
    assert mean_interval([2.0, 2.0])["ci95"] == [2.0, 2.0]
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])
