"""Wilson and Newcombe intervals against the worked examples in the papers that define them."""

import pytest

from apps.leaderboard.stats import Interval, newcombe, wilson


def known(interval: Interval | None) -> Interval:
    """The interval of a sample with trials (None is for none, which these examples never are)."""
    assert interval is not None
    return interval


# Newcombe RG (1998a), "Two-sided confidence intervals for the single proportion: comparison
# of seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score, no correction).
@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_1998a_table_1(successes, n, low, high):
    interval = known(wilson(successes, n))
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)
    assert interval.estimate == successes / n


# Newcombe RG (1998b), "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Statistics in Medicine 17:873-890, Table II, method 10
# (hybrid score, no correction).
@pytest.mark.parametrize(("a", "m", "b", "n", "low", "high"), [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_newcombe_matches_newcombe_1998b_table_2_method_10(a, m, b, n, low, high):
    interval = known(newcombe(a, m, b, n))
    assert interval.estimate == pytest.approx(a / m - b / n)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


def test_an_interval_containing_zero_is_not_distinguishable():
    assert known(newcombe(5, 56, 0, 29)).contains_zero
    assert not known(newcombe(56, 70, 48, 80)).contains_zero


def test_three_of_three_has_a_lower_bound_below_950_of_1000():
    assert known(wilson(3, 3)).low == pytest.approx(0.4385, abs=1e-4)
    assert known(wilson(3, 3)).high == 1.0
    assert known(wilson(3, 3)).low < known(wilson(950, 1000)).low


def test_no_samples_no_interval_and_bad_counts_are_refused():
    assert wilson(0, 0) is None
    assert newcombe(1, 2, 0, 0) is None
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson(5, 4)
