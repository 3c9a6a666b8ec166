"""How `make bench` sets our figures against a peer's: in turn, each side's median round."""

from __future__ import annotations

from typing import Any

from bench.http_bench import alternate


def _runs(name: str, rates: list[float], calls: list[str]) -> Any:
    left = iter(rates)

    def run() -> dict[str, Any]:
        calls.append(name)
        rate = next(left)
        return {"requests_per_s": rate, "server_cpu_ms_per_request": rate / 1000}

    return run


def test_ours_and_the_peers_runs_take_turns() -> None:
    calls: list[str] = []
    alternate(_runs("ours", [1, 2, 3], calls), _runs("peer", [4, 5, 6], calls), rounds=3)
    assert calls == ["ours", "peer"] * 3


def test_each_side_is_its_median_round_whole_with_every_rounds_rate() -> None:
    calls: list[str] = []
    ours, peer = alternate(
        _runs("ours", [900, 1500, 1200], calls), _runs("peer", [2000, 1000, 3000], calls)
    )
    assert ours == {
        "requests_per_s": 1200,
        "server_cpu_ms_per_request": 1.2,  # the median round's own, not a mix of rounds
        "rounds_requests_per_s": [900, 1500, 1200],
    }
    assert peer["requests_per_s"] == 2000 and peer["server_cpu_ms_per_request"] == 2.0
