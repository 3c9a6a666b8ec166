"""Percentiles by the nearest-rank method, the one way the project computes them.

The p-th percentile of n values is the value at rank ceil(p/100 * n) of the sorted values
(ranks start at 1), so it is always one of the measured values. The simulator's report,
the bench and the tests that check the recorder's sketches all use these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# The percentiles every summary gives, by the name they are reported under.
SUMMARY_PERCENTS: dict[str, float] = {"p50": 50, "p90": 90, "p99": 99}


def nearest_rank(percent: float, count: int) -> int:
    """The rank (1 to `count`) of the `percent`-th percentile among `count` values.

    Raises ValueError unless 0 < percent <= 100 and count >= 1."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], not {percent}")
    if count < 1:
        raise ValueError("no values have no percentile")
    # Multiply before dividing: percent * count is exact for whole numbers, so a whole
    # rank is not pushed one up by a rounding error (0.07 * 100 is 7.000000000000001).
    return max(1, math.ceil(percent * count / 100))


def percentile(ordered: Sequence[float], percent: float) -> float | None:
    """The `percent`-th percentile of values sorted ascending; None if there are none."""
    if not ordered:
        return None
    return ordered[nearest_rank(percent, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of `values` (in that order, unrounded); each None if there
    are no values."""
    ordered = sorted(values)
    found = {name: percentile(ordered, p) for name, p in SUMMARY_PERCENTS.items()}
    found["max"] = ordered[-1] if ordered else None
    return found
