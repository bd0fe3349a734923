"""Interval estimates for the leaderboard. Pure functions, no I/O.

- Wilson score interval for one proportion (Newcombe 1998a, "Two-sided confidence intervals
  for the single proportion", method 3): honest at small n and near 0 or 1, where the usual
  p ± z·sqrt(p(1-p)/n) collapses to a point (3/3 would be "100% ± 0").
- Newcombe's hybrid score interval for the difference of two independent proportions
  (Newcombe 1998b, "Interval estimation for the difference between independent proportions",
  method 10): built from the two Wilson intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal distribution


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0 <= self.high


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval for successes/n; None when n is 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n, not {successes}/{n}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Clamp rounding noise: at 0/n the low end is exactly 0, at n/n the high end exactly 1.
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(successes_a: int, n_a: int, successes_b: int, n_b: int, z: float = Z95) -> Interval | None:
    """The interval for p_a - p_b (Newcombe's method 10); None when either n is 0."""
    a, b = wilson(successes_a, n_a, z), wilson(successes_b, n_b, z)
    if a is None or b is None:
        return None
    difference = a.estimate - b.estimate
    low = difference - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = difference + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(difference, low, high)
