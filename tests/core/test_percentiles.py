"""Nearest-rank percentiles: always a measured value, the rank ceil(p/100 * n)."""

from __future__ import annotations

import pytest

from bench.measure import percentiles as bench_percentiles
from core.percentiles import nearest_rank, percentile, summary
from simulator.report import percentiles as report_percentiles


def test_the_rank_is_the_ceiling_of_p_percent_of_n() -> None:
    assert [nearest_rank(50, n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    assert nearest_rank(90, 10) == 9
    assert nearest_rank(90, 25) == 23  # 22.5 goes up, never to the nearest even
    assert nearest_rank(99, 100) == 99
    assert nearest_rank(100, 7) == 7
    assert nearest_rank(0.001, 7) == 1
    # A whole rank stays whole: 0.07 * 100 is 7.000000000000001 in floating point.
    assert nearest_rank(7, 100) == 7
    assert nearest_rank(57, 100) == 57


@pytest.mark.parametrize(("percent", "count"), [(0, 5), (-1, 5), (100.5, 5), (50, 0)])
def test_a_rank_outside_the_values_is_refused(percent: float, count: int) -> None:
    with pytest.raises(ValueError):
        nearest_rank(percent, count)


def test_a_percentile_is_one_of_the_values() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 50) == 50.0
    assert percentile(ordered, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_the_summary_sorts_and_gives_p50_p90_p99_and_max() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert summary(values) == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "max": 5.0}
    assert summary(iter(values)) == summary(values)
    assert summary([]) == {"p50": None, "p90": None, "p99": None, "max": None}


def test_the_report_and_the_bench_give_the_same_percentiles() -> None:
    seconds = [0.001 * v for v in (7, 1, 9, 3, 12, 5, 8, 2, 11, 4, 6, 10, 13, 25, 24)]
    ms = [1000 * s for s in seconds]
    report = report_percentiles(seconds)
    bench = bench_percentiles(ms)
    assert report["count"] == 15
    for name in ("p50", "p90", "p99", "max"):
        assert report[name] == pytest.approx(bench[name]), name
    assert bench == {"p50": 8.0, "p90": 24.0, "p99": 25.0, "max": 25.0}
    # The bench's format: two decimals, zeros when nothing was measured.
    assert bench_percentiles([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    assert bench_percentiles([1.23456]) == {"p50": 1.23, "p90": 1.23, "p99": 1.23, "max": 1.23}
