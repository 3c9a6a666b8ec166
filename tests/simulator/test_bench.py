"""The efficiency benchmark runs and reports its figures (timings are never asserted)."""

from __future__ import annotations

from simulator.bench import measure_lateness


def test_measure_lateness_reports_every_figure() -> None:
    result = measure_lateness(rate=200, seconds=1)
    assert (result["rate"], result["sent"], result["answered"]) == (200, 200, 200)
    assert set(result["lateness_ms"]) == {"count", "p50", "p90", "p99", "max"}
    assert result["cpu_seconds_per_second"] > 0
