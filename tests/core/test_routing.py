"""The routing policy: queue choice, caps, flood demotion, stagger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.messages import TaskRequest
from core.priority import Priority
from core.routing import RoutingError, RoutingPolicy, stagger_fraction
from core.settings import BUILTIN_ROUTINES, RoutineSpec, RoutineType, Settings

ACCEPTED = datetime(2026, 1, 1, tzinfo=UTC)


def _settings(**kwargs: object) -> Settings:
    routines = {
        "report": RoutineSpec(
            function="tasks.routines:sleep",
            type=RoutineType.BATCH,
            priority=Priority.LOW,
            stagger=60,
        )
    }
    return Settings(_env_file=None, routines=routines, **kwargs)  # type: ignore[call-arg]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _route(
    policy: RoutingPolicy,
    *,
    task: str = "t",
    team: str = "alpha",
    routine: str = "noop",
    priority: Priority = Priority.HIGH,
):  # type: ignore[no-untyped-def]
    return policy.route(
        TaskRequest(
            task_id=task, team=team, routine=routine, priority=priority, accepted_at=ACCEPTED
        )
    )


def test_requested_priority_is_the_queue() -> None:
    policy = RoutingPolicy(_settings())
    for priority in Priority.ordered():
        route = _route(policy, priority=priority)
        assert route.queue is priority
        assert route.release_at is None and route.detail is None


def test_check_refuses_priority_above_the_routines_maximum() -> None:
    policy = RoutingPolicy(_settings())
    assert policy.check("report", None) is Priority.LOW
    assert policy.check("report", Priority.MEDIUM) is Priority.MEDIUM
    with pytest.raises(RoutingError, match="medium priority at most"):
        policy.check("report", Priority.HIGH)
    with pytest.raises(RoutingError, match="unknown routine 'nope'"):
        policy.check("nope", None)
    assert policy.check("noop", None) is BUILTIN_ROUTINES["noop"].priority


def test_route_caps_a_request_above_the_maximum_and_says_so() -> None:
    policy = RoutingPolicy(_settings())
    route = _route(policy, routine="report", priority=Priority.HIGH)
    assert route.queue is Priority.MEDIUM
    assert route.detail is not None and route.detail["capped_from"] == "high"


def test_flooding_team_is_demoted_for_the_excess_only() -> None:
    clock = Clock()
    policy = RoutingPolicy(
        _settings(flood_quota={Priority.HIGH: 3}, flood_window_seconds=10), clock=clock
    )
    queues = [_route(policy, task=str(i)).queue for i in range(5)]
    assert queues == [Priority.HIGH] * 3 + [Priority.MEDIUM] * 2
    demoted = _route(policy, task="x")
    assert demoted.detail is not None
    assert demoted.detail["demoted_from"] == "high"
    assert (
        "team alpha sent 6 high tasks within 10s, over its quota of 3" in demoted.detail["reason"]
    )
    # Another team is not affected by alpha's flood.
    assert _route(policy, team="bravo").queue is Priority.HIGH
    # After the window, alpha is back to its quota.
    clock.now += 11
    assert _route(policy).queue is Priority.HIGH


def test_only_a_first_delivery_counts_towards_the_flood_quota() -> None:
    policy = RoutingPolicy(_settings(flood_quota={Priority.HIGH: 1}), clock=Clock())
    first = TaskRequest(
        task_id="t", team="alpha", routine="noop", priority=Priority.HIGH, accepted_at=ACCEPTED
    )
    assert policy.route(first).queue is Priority.HIGH
    for again in (first.sent_again(retries=1), first.sent_again(dispatch=1)):
        assert policy.route(again).queue is Priority.HIGH  # not counted: no demotion
    assert policy.route(first.sent_again(task_id="u")).queue is Priority.MEDIUM


def test_stagger_spreads_a_batch_routine_over_its_window_deterministically() -> None:
    policy = RoutingPolicy(_settings())
    routes = [
        _route(policy, task=f"task-{i}", routine="report", priority=Priority.LOW)
        for i in range(200)
    ]
    offsets = [(r.release_at - ACCEPTED).total_seconds() for r in routes if r.release_at]
    assert len(offsets) == 200
    assert all(0 <= o < 60 for o in offsets)
    # Spread over the window, not bunched: every sixth of it gets some.
    assert {int(o // 10) for o in offsets} == set(range(6))
    again = _route(policy, task="task-7", routine="report", priority=Priority.LOW)
    assert again.release_at == routes[7].release_at
    assert 0 <= stagger_fraction("anything") < 1
