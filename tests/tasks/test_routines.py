"""The built-in routines, as plain functions: each reads its payload through its model in
core.payloads (defaults for what is left out), and a payload that does not fit (one
accepted before the API checked payloads) fails the run naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasks.context import RoutineContext
from tasks.routines import RoutineFailed, cpu, echo, fail, noop, sleep


def context(attempt: int) -> RoutineContext:
    return RoutineContext("t", "alpha", "fail", attempt=attempt)


def test_each_builtin_reads_its_payload_with_the_models_defaults() -> None:
    assert sleep({"ms": 0}) == {"slept_ms": 0}
    assert sleep({"ms": 5.0}) == {"slept_ms": 5}  # what the schema lets in, it reads
    assert cpu({"iterations": 3})["iterations"] == 3
    assert cpu({})["iterations"] == 10_000
    with pytest.raises(RoutineFailed, match="attempt 1 of the first 1"):
        fail({}, context(1))
    assert fail({"times": 1}, context(2)) == {"succeeded_on_attempt": 2}
    assert noop({"anything": 1}) is None
    assert echo({"x": [1]}) == {"x": [1]}


@pytest.mark.parametrize(
    ("routine", "payload", "named"),
    [
        (sleep, {"ms": -5}, "payload.ms"),
        (sleep, {"ms": "soon"}, "payload.ms"),
        (sleep, {"msec": 5}, "payload.msec"),
        (cpu, {"iterations": 10**12}, "payload.iterations"),
    ],
)
def test_a_payload_that_does_not_fit_fails_naming_the_field(
    routine: Any, payload: dict[str, Any], named: str
) -> None:
    with pytest.raises(RoutineFailed, match=re.escape(named)):
        routine(payload)
    with pytest.raises(RoutineFailed, match=re.escape("payload.times")):
        fail({"times": -1}, context(1))
