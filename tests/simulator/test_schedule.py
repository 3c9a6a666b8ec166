"""Expanding count/every into one sorted schedule."""

from __future__ import annotations

import json

from simulator.dataset import parse_dataset
from simulator.schedule import expand


def dataset(*requests: dict[str, object]) -> str:
    base = {"team": "alpha", "routine": "noop", "priority": "high", "payload": {}}
    return json.dumps({"name": "s", "requests": [{**base, **r} for r in requests]})


def test_count_and_every_expand_in_order() -> None:
    firings = expand(
        parse_dataset(
            dataset(
                {"at": "00:10", "count": 3, "every": 5, "team": "bravo"},
                {"at": "00:00", "count": 2, "every": "00:12"},
                {"at": "00:12"},
            )
        )
    )
    assert [(f.offset, f.entry, f.repeat) for f in firings] == [
        (0, 1, 0),
        (10, 0, 0),
        (12, 1, 1),  # ties: dataset order
        (12, 2, 0),
        (15, 0, 1),
        (20, 0, 2),
    ]
    assert firings[1].request.team == "bravo"


def test_fractional_every_and_bursts() -> None:
    firings = expand(
        parse_dataset(dataset({"at": "00:01", "count": 4, "every": 0.25}, {"at": "00:01"}))
    )
    assert [f.offset for f in firings] == [1.0, 1.0, 1.25, 1.5, 1.75]
    burst = expand(parse_dataset(dataset({"at": "06:00", "count": 3, "every": 0})))
    assert [f.offset for f in burst] == [360, 360, 360]


def test_size_matches_the_schedule() -> None:
    parsed = parse_dataset(dataset({"at": "00:00", "count": 100, "every": 1}, {"at": "01:00"}))
    assert len(expand(parsed)) == parsed.size == 101
