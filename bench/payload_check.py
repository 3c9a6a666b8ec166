"""What the submit-time payload check costs: CPU microseconds per payload, in process.

`python -m bench.payload_check` times, for echo and sleep payloads, the check the API
runs per item (app.submission: the routine's spec, then its compiled schema), next to
parsing the submit body (SubmitRequest), which every submit already pays. No stack needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.submission import parse_submission
from core.routing import RoutingPolicy
from core.settings import Settings

REPEATS = 5
CALLS = 100_000


def per_call_us(work: Callable[[], Any], calls: int = CALLS) -> float:
    """The best of REPEATS runs of `calls` calls, in CPU microseconds per call."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, time.process_time() - start)
    return best / calls * 1e6


def measure() -> dict[str, float]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    policy = RoutingPolicy(settings)

    def check(routine: str, payload: dict[str, Any]) -> Callable[[], Any]:
        def run() -> Any:
            schema = policy.spec(routine).payload
            if schema is None or schema.takes_anything:
                return None
            return schema.problems(payload)

        return run

    echo = {"screen": "inbox", "user": 42, "items": [1, 2, 3]}
    bodies = {
        "echo": {"team": "alpha", "routine": "echo", "payload": echo},
        "sleep": {"team": "alpha", "routine": "sleep", "payload": {"ms": 20}},
    }
    return {
        "check echo": per_call_us(check("echo", echo)),
        "check sleep": per_call_us(check("sleep", {"ms": 20})),
        "check sleep, refused (ms -5)": per_call_us(check("sleep", {"ms": -5}), CALLS // 10),
        "parse body echo (already paid)": per_call_us(lambda: parse_submission(bodies["echo"])),
        "parse body sleep (already paid)": per_call_us(lambda: parse_submission(bodies["sleep"])),
    }


def main() -> None:
    for name, microseconds in measure().items():
        print(f"{name:34} {microseconds:7.2f} µs CPU per payload")


if __name__ == "__main__":
    main()
