"""Stream statistics, pure part: percentiles, sliding windows, dedupe, out-of-order events,
in-flight, eviction and bounded memory, per-team scopes, and publishing at most once a
second without ever raising. Synthetic events and an injected clock; no Redis, no Kafka."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from core.messages import StatusEvent
from core.status import OUTCOMES, Status
from recorder.stats import SnapshotPublisher, StreamStats
from recorder.stats_aggregate import StreamAggregator
from recorder.stats_tasks import TaskTracker
from recorder.stats_windows import RELATIVE_ACCURACY, bucket_of, bucket_value, quantiles


def _counts(statuses: Iterable[Status], **counts: int) -> dict[str, int]:
    """A count per status, in order: those given, and 0 for the rest."""
    return {status.value: counts.get(status.value, 0) for status in statuses}


START = 1_800_000_000.0  # arrival clock (unix seconds); a whole second
# Event time base: the arrival clock's start (a run_at is compared with arrival times).
T0 = datetime.fromtimestamp(START, UTC)
TEAMS = ["alpha", "bravo", "charlie"]


def _at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def _task(
    *,
    team: str = "alpha",
    priority: str = "high",
    routine: str = "echo",
    wait_ms: float = 100.0,
    run_ms: float = 50.0,
    end: Status = Status.SUCCEEDED,
    attempts: int = 1,
    task_id: str | None = None,
) -> list[StatusEvent]:
    """A task's events: accepted at 0 ms, first started after wait_ms, each attempt runs
    run_ms then retries after 10 ms, the last attempt ends run_ms after it started."""
    task_id = task_id or str(uuid.uuid4())
    common: dict[str, Any] = {
        "task_id": task_id,
        "team": team,
        "routine": routine,
        "priority": priority,
        "accepted_at": _at(0),
    }
    events = [StatusEvent(status=Status.ACCEPTED, at=_at(0), **common)]
    started = wait_ms
    for attempt in range(1, attempts + 1):
        events.append(
            StatusEvent(status=Status.QUEUED, at=_at(started - 1), attempt=attempt, **common)
        )
        events.append(
            StatusEvent(status=Status.STARTED, at=_at(started), attempt=attempt, **common)
        )
        if attempt < attempts:
            events.append(
                StatusEvent(
                    status=Status.RETRYING, at=_at(started + run_ms), attempt=attempt, **common
                )
            )
            started += run_ms + 10
    events.append(StatusEvent(status=end, at=_at(started + run_ms), attempt=attempts, **common))
    return events


def _aggregator(**tracker: Any) -> StreamAggregator:
    return StreamAggregator(
        teams=TEAMS, start=START, tracker=TaskTracker(teams=TEAMS, **tracker) if tracker else None
    )


def _window(snapshot: dict[str, Any], window: str = "1m", scope: str = "*") -> dict[str, Any]:
    found: dict[str, Any] = snapshot["windows"][window]["scopes"][scope]
    return found


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# Percentiles.


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.01, max_value=3_600_000.0), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.99, 1.0]),
)
def test_histogram_quantiles_are_within_the_stated_accuracy_of_the_exact_ones(
    values: list[float], q: float
) -> None:
    buckets: dict[int, int] = {}
    for value in values:
        buckets[bucket_of(value)] = buckets.get(bucket_of(value), 0) + 1
    found = quantiles(buckets, [q])
    assert found is not None
    exact = _exact(values, q)
    assert abs(found[0] - exact) <= RELATIVE_ACCURACY * exact * 1.0001


def test_quantiles_of_nothing_is_none_and_zero_or_negative_latency_counts_as_zero() -> None:
    assert quantiles({}, [0.5]) is None
    assert bucket_value(bucket_of(0.0)) == 0.0
    assert bucket_value(bucket_of(-5.0)) == 0.0  # clock skew between processes


def test_latencies_come_from_event_times_and_are_reported_per_metric() -> None:
    agg = _aggregator()
    waits = [float(ms) for ms in range(10, 1010, 10)]  # 10 .. 1000 ms
    events = [e for wait in waits for e in _task(wait_ms=wait, run_ms=wait / 2)]
    agg.observe(events, START + 0.5)
    latency = _window(agg.snapshot(START + 1.0))["overall"]["latency_ms"]
    for metric, values in (
        ("wait", waits),
        ("run", [w / 2 for w in waits]),
        ("end_to_end", [w * 1.5 for w in waits]),
    ):
        assert latency[metric]["count"] == 100
        assert latency[metric]["max"] == pytest.approx(max(values))
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            assert latency[metric][name] == pytest.approx(_exact(values, q), rel=RELATIVE_ACCURACY)


def test_wait_is_to_the_first_start_and_run_from_the_last_start_of_a_retried_task() -> None:
    agg = _aggregator()
    # Waits 100 ms, runs 50 ms, retries 10 ms later twice: starts at 100, 160, 220; ends 270.
    agg.observe(_task(wait_ms=100, run_ms=50, attempts=3), START)
    latency = _window(agg.snapshot(START + 1))["overall"]["latency_ms"]
    assert latency["wait"]["max"] == pytest.approx(100)
    assert latency["run"]["max"] == pytest.approx(50)
    assert latency["end_to_end"]["max"] == pytest.approx(270)


# Windows, counts, rates.


def test_counts_by_status_outcomes_success_rate_and_throughput() -> None:
    agg = _aggregator()
    events = [e for _ in range(6) for e in _task()]
    events += [e for _ in range(3) for e in _task(end=Status.FAILED, attempts=2)]
    events += [
        StatusEvent(
            task_id=str(uuid.uuid4()),
            status=Status.DEAD_LETTERED,
            team="alpha",
            routine="nope",
            priority="high",
            at=_at(0),
        )
    ]
    agg.observe(events, START + 0.2)
    overall = _window(agg.snapshot(START + 10.0))["overall"]
    assert overall["outcomes"] == _counts(OUTCOMES, SUCCEEDED=6, FAILED=3, DEAD_LETTERED=1)
    assert overall["terminal"] == 10
    assert overall["transitions"] == _counts(
        Status,
        ACCEPTED=9,
        QUEUED=12,
        STARTED=12,
        RETRYING=3,
        SUCCEEDED=6,
        FAILED=3,
        DEAD_LETTERED=1,
    )
    assert overall["success_rate"] == 0.6
    # Ten seconds since the start: the rate is over those, not over the whole minute.
    assert agg.snapshot(START + 10.0)["windows"]["1m"]["covered_seconds"] == 10
    assert overall["throughput_per_s"] == pytest.approx(1.0)


def test_an_event_counts_from_the_next_second_until_it_leaves_each_window() -> None:
    agg = _aggregator()
    agg.observe(_task(), START + 100.3)

    def terminal(now: float, window: str) -> int:
        result: int = _window(agg.snapshot(now), window)["overall"]["terminal"]
        return result

    assert terminal(START + 100.9, "1m") == 0  # its second is still open
    assert terminal(START + 101.0, "1m") == 1
    assert terminal(START + 160.9, "1m") == 1
    assert terminal(START + 161.0, "1m") == 0
    assert terminal(START + 161.0, "5m") == 1
    assert terminal(START + 399.0, "5m") == 1
    assert terminal(START + 405.0, "5m") == 0  # 5 s buckets: gone within 300 + 5 s
    assert terminal(START + 999.0, "15m") == 1
    assert terminal(START + 1015.0, "15m") == 0
    assert agg.timeline.totals.counts[("*", "overall", "")]["o:SUCCEEDED"] == 1


def test_the_maximum_is_recomputed_when_the_slowest_task_leaves_the_window() -> None:
    agg = _aggregator()
    agg.observe(_task(wait_ms=5000), START + 1)
    agg.observe(_task(wait_ms=100), START + 30)
    assert _window(agg.snapshot(START + 31))["overall"]["latency_ms"]["wait"]["max"] == 5000
    later = _window(agg.snapshot(START + 62))["overall"]["latency_ms"]["wait"]
    assert later["count"] == 1
    assert later["max"] == pytest.approx(100)


# Dedupe, order, in-flight, eviction.


def test_a_repeated_batch_changes_nothing() -> None:
    agg = _aggregator()
    events = [e for _ in range(5) for e in _task()]
    agg.observe(events, START)
    agg.observe(events, START + 0.5)  # at-least-once: the same events again
    agg.observe(list(reversed(events)), START + 2.5)
    overall = _window(agg.snapshot(START + 5))["overall"]
    assert overall["terminal"] == 5
    assert overall["transitions"]["STARTED"] == 5
    assert overall["latency_ms"]["wait"]["count"] == 5


def test_out_of_order_events_still_give_latencies_and_leave_nothing_in_flight() -> None:
    agg = _aggregator()
    events = _task(wait_ms=200, run_ms=30)  # ACCEPTED, QUEUED, STARTED, SUCCEEDED
    accepted, queued, started, succeeded = events
    agg.observe([started, succeeded], START)  # the worker's events overtake the bridge's
    agg.observe([queued, accepted], START + 0.5)
    overall = _window(agg.snapshot(START + 2))["overall"]
    assert overall["in_flight"] == 0
    assert overall["transitions"]["ACCEPTED"] == 1  # late history still counts as seen
    assert overall["latency_ms"]["wait"]["max"] == pytest.approx(200)
    assert overall["latency_ms"]["end_to_end"]["max"] == pytest.approx(230)


def test_a_second_end_or_news_after_the_end_is_ignored_as_the_recorder_does() -> None:
    agg = _aggregator()
    events = _task()
    agg.observe(events, START)
    first = events[-1]
    other_end = replace(
        first, status=Status.FAILED, at=first.at + timedelta(seconds=1), attempt=1, event_id=""
    )
    after = replace(
        first, status=Status.STARTED, at=first.at + timedelta(seconds=2), attempt=2, event_id=""
    )
    agg.observe([other_end, after], START + 0.5)
    overall = _window(agg.snapshot(START + 2))["overall"]
    assert overall["outcomes"] == _counts(OUTCOMES, SUCCEEDED=1)
    assert overall["transitions"]["STARTED"] == 1
    assert overall["in_flight"] == 0


def test_in_flight_overall_and_by_priority() -> None:
    agg = _aggregator()
    for priority, count in (("high", 3), ("medium", 2), ("low", 1)):
        for _ in range(count):
            agg.observe(_task(priority=priority)[:2], START)  # accepted and queued only
    agg.observe(_task(priority="low"), START)  # finished: not in flight
    scope = _window(agg.snapshot(START + 1))
    assert scope["overall"]["in_flight"] == 6
    assert {p: s["in_flight"] for p, s in scope["by_priority"].items()} == {
        "high": 3,
        "medium": 2,
        "low": 1,
    }
    point = agg.chart_points(START + 1)["*"]
    assert point["in_flight"] == {"total": 6, "high": 3, "medium": 2, "low": 1}


def test_a_task_without_news_past_the_horizon_is_forgotten_and_counted_as_evicted() -> None:
    agg = _aggregator(horizon=1200.0)
    agg.observe(_task()[:2], START)
    agg.advance(START + 1199)
    assert agg.tracker.in_flight.total() == 1
    agg.advance(START + 1201)
    assert agg.tracker.in_flight.total() == 0
    assert agg.tracker.evicted_in_flight == 1
    assert agg.snapshot(START + 1202)["tracking"]["evicted_in_flight"] == 1


# Scheduled tasks: counted apart from those in flight until they are queued.

DAY_S = 86_400.0


def _scheduled(
    *,
    delay_s: float,
    wait_ms: float = 150.0,
    run_ms: float = 50.0,
    end: Status = Status.SUCCEEDED,
    team: str = "alpha",
    priority: str = "low",
    routine: str = "echo",
) -> list[StatusEvent]:
    """A task accepted at 0 ms to run `delay_s` later: ACCEPTED and SCHEDULED (both carrying
    run_at), then at run_at QUEUED (the bridge's, with run_at), STARTED wait_ms later and
    its end run_ms after that (the worker's, without run_at, as a worker sends them)."""
    run_at_ms = delay_s * 1000
    common: dict[str, Any] = {
        "task_id": str(uuid.uuid4()),
        "team": team,
        "routine": routine,
        "priority": priority,
        "accepted_at": _at(0),
    }
    planned = {**common, "run_at": _at(run_at_ms)}
    return [
        StatusEvent(status=Status.ACCEPTED, at=_at(0), **planned),
        StatusEvent(status=Status.SCHEDULED, at=_at(1), **planned),
        StatusEvent(status=Status.QUEUED, at=_at(run_at_ms), attempt=1, **planned),
        StatusEvent(status=Status.STARTED, at=_at(run_at_ms + wait_ms), attempt=1, **common),
        StatusEvent(status=end, at=_at(run_at_ms + wait_ms + run_ms), attempt=1, **common),
    ]


def _now_counts(agg: StreamAggregator, now: float, scope: str = "*") -> dict[str, Any]:
    """In flight and scheduled, overall and by priority and routine, in one window."""
    found = _window(agg.snapshot(now), scope=scope)
    return {
        figure: {
            "overall": found["overall"][figure],
            "by_priority": {k: v[figure] for k, v in found["by_priority"].items() if v[figure]},
            "by_routine": {k: v[figure] for k, v in found["by_routine"].items() if v[figure]},
        }
        for figure in ("in_flight", "scheduled")
    }


def test_a_scheduled_task_counts_as_scheduled_not_in_flight_in_every_breakdown() -> None:
    agg = _aggregator()
    agg.observe(_scheduled(delay_s=3600, team="bravo", priority="low", routine="cpu")[:2], START)
    agg.observe(_scheduled(delay_s=60, team="alpha", priority="high", routine="echo")[:2], START)
    agg.observe(_task(priority="medium")[:2], START)  # accepted and queued: in flight
    assert _now_counts(agg, START + 1) == {
        "in_flight": {"overall": 1, "by_priority": {"medium": 1}, "by_routine": {"echo": 1}},
        "scheduled": {
            "overall": 2,
            "by_priority": {"high": 1, "low": 1},
            "by_routine": {"echo": 1, "cpu": 1},
        },
    }
    assert _now_counts(agg, START + 1, scope="bravo")["scheduled"] == {
        "overall": 1,
        "by_priority": {"low": 1},
        "by_routine": {"cpu": 1},
    }
    assert _now_counts(agg, START + 1, scope="bravo")["in_flight"]["overall"] == 0
    transitions = _window(agg.snapshot(START + 1))["overall"]["transitions"]
    assert transitions["SCHEDULED"] == 2
    points = agg.chart_points(START + 1)
    assert points["*"]["scheduled"] == {"total": 2, "high": 1, "medium": 0, "low": 1}
    assert points["*"]["in_flight"] == {"total": 1, "high": 0, "medium": 1, "low": 0}
    assert points["bravo"]["scheduled"]["total"] == 1


def test_a_scheduled_task_moves_to_in_flight_when_queued_and_leaves_both_at_its_end() -> None:
    agg = _aggregator()
    events = _scheduled(delay_s=30)
    counts = []
    for n, event in enumerate(events):
        agg.observe([event], START + n)
        overall = _window(agg.snapshot(START + n + 1))["overall"]
        counts.append((event.status.value, overall["scheduled"], overall["in_flight"]))
    assert counts == [
        ("ACCEPTED", 0, 1),  # the bridge announces SCHEDULED right after
        ("SCHEDULED", 1, 0),
        ("QUEUED", 0, 1),
        ("STARTED", 0, 1),
        ("SUCCEEDED", 0, 0),
    ]


def test_history_arriving_late_does_not_move_a_queued_task_back_to_scheduled() -> None:
    agg = _aggregator()
    accepted, scheduled, queued, started, _ = _scheduled(delay_s=5)
    agg.observe([queued, started], START)
    agg.observe([scheduled, accepted], START + 0.5)
    overall = _window(agg.snapshot(START + 2))["overall"]
    assert (overall["scheduled"], overall["in_flight"]) == (0, 1)
    assert overall["transitions"]["SCHEDULED"] == 1  # still seen


@pytest.mark.parametrize("end", [Status.CANCELLED, Status.EXPIRED])
def test_a_task_ended_while_scheduled_leaves_the_count_with_its_outcome(end: Status) -> None:
    agg = _aggregator()
    accepted, scheduled, *_ = _scheduled(delay_s=DAY_S)
    ended = replace(scheduled, status=end, at=_at(90_000), event_id="")  # 90 s later
    agg.observe([accepted, scheduled], START)
    assert _window(agg.snapshot(START + 1))["overall"]["scheduled"] == 1
    agg.observe([ended], START + 90)
    overall = _window(agg.snapshot(START + 91))["overall"]
    assert (overall["scheduled"], overall["in_flight"]) == (0, 0)
    assert overall["outcomes"] == _counts(OUTCOMES, **{end.value: 1})
    assert overall["success_rate"] == 0.0
    latency = overall["latency_ms"]
    assert latency["wait"]["count"] == latency["run"]["count"] == 0  # it never started
    assert latency["end_to_end"]["max"] == pytest.approx(90_000)  # from acceptance
    assert agg.tracker.tracked == 1  # remembered as finished, for its late events only


def test_a_scheduled_task_waits_30_days_without_being_evicted_then_is_if_never_released() -> None:
    agg = _aggregator(horizon=1200.0)
    agg.observe(_scheduled(delay_s=30 * DAY_S)[:2], START)
    agg.observe(_task()[:2], START)  # in flight, for comparison: no news for the horizon
    agg.advance(START + 29 * DAY_S)
    assert agg.tracker.evicted_in_flight == 1
    assert agg.tracker.scheduled.total() == 1
    agg.advance(START + 30 * DAY_S + 1100)  # due, its QUEUED not seen yet: still kept
    assert agg.tracker.scheduled.total() == 1
    agg.advance(START + 30 * DAY_S + 1300)  # past run_at + the horizon without news
    assert agg.tracker.scheduled.total() == 0
    tracking = agg.snapshot(START + 30 * DAY_S + 1301)["tracking"]
    assert (tracking["evicted_in_flight"], tracking["evicted_scheduled"]) == (1, 1)


def test_a_scheduled_task_queued_a_month_later_is_in_flight_then_ends_once() -> None:
    agg = _aggregator()
    events = _scheduled(delay_s=30 * DAY_S)
    agg.observe(events[:2], START)
    later = START + 30 * DAY_S
    agg.observe(events[2:4], later)
    assert (agg.tracker.scheduled.total(), agg.tracker.in_flight.total()) == (0, 1)
    agg.observe(events[4:], later + 1)
    overall = _window(agg.snapshot(later + 2))["overall"]
    assert (overall["scheduled"], overall["in_flight"], overall["terminal"]) == (0, 0, 1)
    assert agg.tracker.evicted_scheduled == agg.tracker.evicted_in_flight == 0


def test_scheduled_tasks_past_the_cap_forget_the_one_due_soonest() -> None:
    agg = _aggregator(max_scheduled=3)
    tasks = [_scheduled(delay_s=delay) for delay in (600, 100, 500, 300, 400)]
    for events in tasks:
        agg.observe(events[:2], START)
    tracker = agg.tracker
    assert tracker.scheduled.total() == 3
    assert tracker.evicted_scheduled == 2
    assert set(tracker._waiting) == {tasks[i][0].task_id for i in (0, 2, 4)}
    # A forgotten task's next event brings it back, in flight, and its wait is still right.
    agg.observe(tasks[1][2:4], START + 100)
    assert tracker.in_flight.total() == 1
    latency = _window(agg.snapshot(START + 101))["overall"]["latency_ms"]
    assert latency["wait"]["max"] == pytest.approx(150)


def test_the_heap_of_scheduled_tasks_is_compacted_as_they_move_on() -> None:
    agg = _aggregator()
    tasks = [_scheduled(delay_s=3600 + n) for n in range(5000)]
    agg.observe([e for events in tasks for e in events[:2]], START)
    agg.observe([e for events in tasks[:4900] for e in events[2:]], START + 3700)
    tracker = agg.tracker
    assert len(tracker._waiting) == 100
    assert len(tracker._due) <= 2 * 100 + 1024


def test_the_wait_of_a_scheduled_task_counts_from_its_run_at() -> None:
    agg = _aggregator()
    # Accepted at 0, to run 60 s later; started 150 ms after its time, ran 50 ms.
    agg.observe(_scheduled(delay_s=60, wait_ms=150, run_ms=50), START)
    # A task whose run_at had passed when it was accepted waits from acceptance.
    overdue = _task(wait_ms=400)
    overdue = [replace(e, run_at=_at(-5000)) for e in overdue]
    agg.observe(overdue, START)
    latency = _window(agg.snapshot(START + 1))["overall"]["latency_ms"]
    assert latency["wait"]["count"] == 2
    assert latency["wait"]["p50"] == pytest.approx(150, rel=RELATIVE_ACCURACY)
    assert latency["wait"]["max"] == pytest.approx(400)
    assert latency["end_to_end"]["max"] == pytest.approx(60_200)  # from acceptance


@pytest.mark.slow
def test_memory_stays_bounded_over_150k_tasks() -> None:
    agg = _aggregator(max_tasks=5_000, max_event_ids=20_000, linger=60.0)
    rate = 500  # tasks a second of arrival time
    for n in range(150_000):
        now = START + n / rate
        if n % 3 == 0:
            agg.observe(_task(task_id=str(uuid.uuid4()))[:2], now)  # some never finish
        else:
            agg.observe(_task(task_id=str(uuid.uuid4())), now)
        if n % rate == 0:
            agg.advance(now)
    tracker = agg.tracker
    assert len(tracker._tasks) <= 5_000
    assert len(tracker._finished) <= 5_000
    assert len(tracker.event_ids) <= 20_000
    assert sum(len(ring) for ring in tracker.recent.values()) <= 20 * len(TEAMS)
    # Windows keep about 60 buckets each, however many seconds went by.
    for window in agg.timeline.windows.values():
        assert len(window._buckets) <= 61
    assert tracker.evicted_in_flight > 0


def test_odd_label_values_are_capped() -> None:
    agg = _aggregator()
    for n in range(200):
        agg.observe(_task(routine=f"routine-{n}"), START)
    routines = _window(agg.snapshot(START + 1))["by_routine"]
    assert len(routines) <= 65
    assert routines["(other)"]["terminal"] == 200 - 64


# Scopes: everyone, and each team alone.


def test_a_team_scope_holds_that_team_only_and_all_teams_add_up() -> None:
    agg = _aggregator()
    agg.observe([e for _ in range(4) for e in _task(team="alpha", routine="echo")], START)
    agg.observe([e for _ in range(2) for e in _task(team="bravo", routine="cpu")], START)
    agg.observe(_task(team="bravo", priority="low")[:1], START)
    snapshot = agg.snapshot(START + 1)
    alpha, bravo, everyone = (_window(snapshot, scope=s) for s in ("alpha", "bravo", "*"))
    assert alpha["overall"]["terminal"] == 4
    assert set(alpha["by_routine"]) == {"echo"}
    assert bravo["overall"]["terminal"] == 2
    assert bravo["overall"]["in_flight"] == 1
    assert set(bravo["by_routine"]) == {"cpu", "echo"}
    assert everyone["overall"]["terminal"] == 6
    assert _window(snapshot, scope="charlie")["overall"]["terminal"] == 0
    assert [t["team"] for t in snapshot["recent"]["alpha"]] == ["alpha"] * 4
    points = agg.chart_points(START + 1)
    assert set(points["bravo"]["throughput_by_team"]) == {"bravo"}
    assert set(points["*"]["throughput_by_team"]) == set(TEAMS)


def test_recent_tasks_show_the_latest_status_newest_first() -> None:
    agg = _aggregator()
    first, second = _task(), _task()
    agg.observe(first, START)
    agg.observe(second[:3], START + 1)
    agg.observe(first[:2], START + 2)  # a repeat must not move it back to QUEUED
    recent = agg.snapshot(START + 3)["recent"]["alpha"]
    assert [(r["task_id"], r["status"]) for r in recent] == [
        (second[0].task_id, "STARTED"),
        (first[0].task_id, "SUCCEEDED"),
    ]


# Publishing.


class FakePublisher(SnapshotPublisher):
    def __init__(self) -> None:
        self.published: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.failing = False

    def publish(self, snapshot: dict[str, Any], points: dict[str, dict[str, Any]]) -> None:
        if self.failing:
            raise redis.ConnectionError("Redis is down")
        self.published.append((snapshot, points))

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def test_publishes_at_most_once_a_second_from_batches_and_idle_polls() -> None:
    clock, publisher = Clock(), FakePublisher()
    stats = StreamStats(aggregator=_aggregator(), publisher=publisher, clock=clock)
    for step in range(50):  # five seconds of 100 ms ticks
        clock.now = START + step / 10
        stats.on_batch(_task()) if step % 2 else stats.on_idle()
    assert len(publisher.published) == 5
    snapshot, points = publisher.published[-1]
    assert snapshot["generated_at"] == pytest.approx(START + 4.0)
    assert set(points) == {"*", *TEAMS}


def test_redis_failures_are_logged_once_never_raised_and_publishing_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, publisher = Clock(), FakePublisher()
    stats = StreamStats(aggregator=_aggregator(), publisher=publisher, clock=clock)
    publisher.failing = True
    with caplog.at_level(logging.INFO, logger="recorder.stats"):
        for step in range(20):
            clock.now = START + step
            stats.on_batch(_task())  # must not raise
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        publisher.failing = False
        for step in range(20, 60):
            clock.now = START + step
            stats.on_idle()
    assert publisher.published, "publishing resumed after Redis came back"
    assert any("again" in r.getMessage() for r in caplog.records)
    snapshot = publisher.published[-1][0]
    assert snapshot["totals"]["scopes"]["*"]["overall"]["outcomes"]["SUCCEEDED"] == 20
