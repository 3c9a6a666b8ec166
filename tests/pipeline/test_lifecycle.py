"""The task lifecycle on real platforms: cancel at every stage, a cancel that outlives
kill -9 of the bridge and the worker, scheduled runs (held by the bridge, or parked in
Postgres and released) through a bridge restart, and expiry under a backlog.

Behaviour, not speed: a cancelled task ends CANCELLED with one terminal event and runs
nothing after its cancel was answered; a scheduled task runs once and not before its
time; an expired task never runs. The routines here note each run start in a file of
their own (tests.routines_for_tests), so "never ran" is read from what the worker did,
not only from the timeline. Latencies and the schedule's accuracy are printed (`-s`),
never asserted.

Stages are built with gate tasks that hold the worker slots until the test creates their
release file. While every slot is held, the first tasks of a priority the bridge takes
in go onto its Celery queue (the fast lane: as many as there are slots) and the rest
wait in the bridge (DISPATCH_HEADROOM is spent); which task is where is read from its
timeline (QUEUED or not) and checked against the stage the cancel answers.

Tests that kill or restart processes, or need routines of their own, run on isolated
instances (tests.instance: their own topics, database, Redis database and processes);
the default stack serves the API-only checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, text

from app.auth import create_key
from core import redis_keys
from core.kafka import client_config
from core.messages import decode_event
from core.percentiles import percentile
from core.settings import Settings
from tests.helpers import wait_for
from tests.instance import Instance, submit
from tests.pipeline_instance import one_slot_instance, pipeline_instance
from tests.tasks_db import TERMINAL_VALUES, events, statuses, submit_batch, wait_terminal

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROUTINES = {
    "traced": {"function": "tests.routines_for_tests:traced", "timeout": 120, "retries": 2},
    "until_cancelled": {"function": "tests.routines_for_tests:until_cancelled", "timeout": 120},
    "ignores_cancel": {"function": "tests.routines_for_tests:ignores_cancel", "timeout": 120},
}
GRACE_SECONDS = 1.0  # CANCEL_GRACE_SECONDS of both instances
# A start may precede run_at by the clocks' resolution only (run_at travels in
# microseconds; the worker stamps STARTED from the same host clock).
CLOCK_RESOLUTION = timedelta(milliseconds=2)


# Reading what happened.


def _runs(folder: Path, task_id: str) -> list[tuple[str, float, int]]:
    """What the routine noted for this task: (what, unix time, attempt) per line."""
    path = folder / task_id
    if not path.exists():
        return []
    notes = []
    for line in path.read_text().splitlines():
        what, at, attempt = line.split()
        notes.append((what, float(at), int(attempt)))
    return notes


def _starts(folder: Path, task_id: str) -> list[float]:
    return [at for what, at, _ in _runs(folder, task_id) if what == "start"]


def _with_event(engine: Engine, ids: list[str], status: str) -> list[str]:
    """The tasks among `ids` with an event of this status in Postgres."""
    found = events(engine, ids)
    return [t for t in ids if any(r.status == status for r in found[t])]


def _wait_events(engine: Engine, ids: list[str], status: str, timeout: float = 60) -> None:
    wait_for(
        lambda: len(_with_event(engine, ids, status)) == len(ids),
        timeout=timeout,
        interval=0.05,
        what=f"{len(ids)} tasks to have a {status} event",
    )


def _wait_status(engine: Engine, task_id: str, status: str, timeout: float = 60) -> float:
    """Wait until Postgres has the task at this status; returns when it was seen."""
    wait_for(
        lambda: statuses(engine, [task_id]).get(task_id) == status,
        timeout=timeout,
        interval=0.02,
        what=f"{task_id} to be {status}",
    )
    return time.time()


def _ended_once(engine: Engine, task_id: str, status: str) -> list[Any]:
    """The task's timeline, checked to hold exactly one terminal event, of this status."""
    timeline = events(engine, [task_id])[task_id]
    ends = [r.status for r in timeline if r.status in TERMINAL_VALUES]
    assert ends == [status], (task_id, [(r.status, r.attempt) for r in timeline])
    return timeline


def _count(timeline: list[Any], status: str) -> int:
    return sum(1 for r in timeline if r.status == status)


def _kept_outcome(instance: Instance, task_id: str) -> str | None:
    """The status of the outcome kept in Redis for the task (the arbiter of its end)."""
    client = redis.Redis.from_url(instance.env["REDIS_URL"])
    try:
        kept = client.get(redis_keys.outcome(task_id))
    finally:
        client.close()
    return decode_event(kept).status.value if isinstance(kept, bytes) else None


def _requests_produced(instance: Instance, team: str, task_id: str) -> int:
    """How many requests for this task are on its team's topic (the first, plus any
    retry or release sent since)."""
    assert instance.settings is not None
    settings = instance.settings
    topic = settings.request_topic(team)
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"{instance.token}-peek-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {}
        for number in range(settings.topic_partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
            if high > low:
                ends[number] = high
        consumer.assign([TopicPartition(topic, number, 0) for number in ends])
        found, left = 0, dict(ends)
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.key() == task_id.encode():
                found += 1
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            if partition in left and offset + 1 >= left[partition]:
                del left[partition]
        assert not left, f"could not read {topic} to its end"
        return found
    finally:
        consumer.close()


# Cancelling, with the figures the issue asks for.


def _cancel(
    client: httpx.Client, task_id: str, *, terminate: bool = False
) -> tuple[dict[str, Any], float, float]:
    """Cancel one task, which must be answered 202; returns (body, asked at, answered at)
    as unix times."""
    asked = time.time()
    response = client.post(f"/api/v1/tasks/{task_id}/cancel", json={"terminate": terminate})
    answered = time.time()
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task_id"] == task_id and body["status"] == "CANCELLED"
    assert body["terminate"] is terminate
    return body, asked, answered


def _report(stage: str, engine: Engine, task_id: str, asked: float, **moments: float) -> None:
    """Print how long after the cancel request its CANCELLED event was stamped, and when
    each of `moments` (unix times the test measured) came."""
    event = next(r for r in events(engine, [task_id])[task_id] if r.status == "CANCELLED")
    figures = {"event stamped": event.at.timestamp(), **moments}
    shown = ", ".join(f"{name} +{(at - asked) * 1000:.0f} ms" for name, at in figures.items())
    print(f"\ncancel at stage {stage}: {shown} (after the request)")


def _traced(runs: Path, priority: str = "medium", team: str = "alpha", **payload: Any) -> dict:
    return {
        "team": team,
        "routine": "traced",
        "priority": priority,
        "payload": {"runs": str(runs), **payload},
    }


def _failing_when_released(engine: Engine, client: httpx.Client, runs: Path) -> tuple[str, Path]:
    """A medium task whose first attempt runs until its release file is created and then
    fails (with retries left), submitted and seen STARTED. Returns its id and that file."""
    release = runs / "fail-now"
    (task_id,) = submit(client, [_traced(runs, "medium", release=str(release), fail=1)])
    _wait_events(engine, [task_id], "STARTED")
    return task_id, release


@contextmanager
def _held_slots(
    instance: Instance, client: httpx.Client, folder: Path, count: int, running: int
) -> Iterator[tuple[list[str], Path]]:
    """Every worker slot held by gate tasks (high priority) until the block ends, with
    `count - running` more gates on the Celery queue, so the bridge's window is full.
    Yields the gates' ids and their release file."""
    release = folder / f"release-{uuid.uuid4().hex[:8]}"
    gates = submit(
        client,
        [_traced(folder, "high", release=str(release), seconds=120) for _ in range(count)],
    )
    try:
        _wait_events(instance.engine, gates, "QUEUED")
        wait_for(
            lambda: len(_with_event(instance.engine, gates, "STARTED")) == running,
            timeout=60,
            what=f"{running} gates to hold the worker slots",
        )
        yield gates, release
    finally:
        release.touch()


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


# One worker slot and no headroom: a held slot keeps a newcomer of each priority on its
# Celery queue and every other task in the bridge. CANCEL_GRACE_SECONDS is 1.


@pytest.fixture(scope="class")
def one_slot(stack: Settings) -> Iterator[Instance]:
    with one_slot_instance(
        stack, "cancel", ROUTINES, CANCEL_GRACE_SECONDS=str(GRACE_SECONDS)
    ) as instance:
        yield instance


class TestCancelAndExpiryOnOneSlot:
    def test_a_task_cancelled_in_the_bridge_or_on_its_celery_queue_never_runs(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        with one_slot.client() as client:
            with _held_slots(one_slot, client, runs, count=1, running=1):
                medium = submit(client, [_traced(runs, "medium") for _ in range(2)])
                low = submit(client, [_traced(runs, "low") for _ in range(2)])
                _wait_events(engine, medium + low, "ACCEPTED")
                # The first of each priority takes the fast lane onto its Celery queue.
                wait_for(
                    lambda: len(_with_event(engine, medium + low, "QUEUED")) == 2,
                    what="one task of each priority on its Celery queue",
                )
                on_queue = _with_event(engine, medium + low, "QUEUED")
                queued = next(t for t in medium if t in on_queue)
                waiting = next(t for t in medium if t not in on_queue)
                controls = low  # one on its queue, one in the bridge: both must run

                first, queued_asked, queued_answered = _cancel(client, queued)
                assert first["stage"] == "QUEUED"
                queued_recorded = _wait_status(engine, queued, "CANCELLED")
                body, waiting_asked, waiting_answered = _cancel(client, waiting)
                assert body["stage"] == "ACCEPTED"  # taken in by the bridge, not dispatched
                waiting_recorded = _wait_status(engine, waiting, "CANCELLED")
                # A repeat answers as the first did, also once the CANCELLED is recorded.
                again = client.post(f"/api/v1/tasks/{queued}/cancel", json={})
                assert again.status_code == 202 and again.json() == first
                _report(
                    "QUEUED (on its Celery queue)",
                    engine,
                    queued,
                    queued_asked,
                    recorded=queued_recorded,
                )
                _report(
                    "ACCEPTED (waiting in the bridge)",
                    engine,
                    waiting,
                    waiting_asked,
                    recorded=waiting_recorded,
                )
            # The slot is free: the worker takes the medium queue before the low one, so
            # once both controls are done it has met the cancelled task; the bridge has
            # met the other once it has committed every request.
            assert wait_terminal(engine, controls, timeout=60) == dict.fromkeys(
                controls, "SUCCEEDED"
            )
            one_slot.wait_bridge_caught_up()

        for task_id in (queued, waiting):
            timeline = _ended_once(engine, task_id, "CANCELLED")
            assert _count(timeline, "STARTED") == 0
            assert _runs(runs, task_id) == []
            assert _kept_outcome(one_slot, task_id) == "CANCELLED"
        assert _count(events(engine, [queued])[queued], "QUEUED") == 1
        assert _count(events(engine, [waiting])[waiting], "QUEUED") == 0  # never dispatched
        for task_id in controls:
            assert len(_starts(runs, task_id)) == 1
        assert all(at < queued_answered for at in _starts(runs, queued))
        assert all(at < waiting_answered for at in _starts(runs, waiting))

    def test_a_task_cancelled_while_retrying_gets_no_further_attempt(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        with one_slot.client() as client:
            failing, first_attempt = _failing_when_released(engine, client, runs)
            # A gate on the high queue takes the slot as soon as the first attempt fails,
            # so the retry waits in the bridge (its backoff is half a second at most).
            with _held_slots(one_slot, client, runs, count=1, running=0) as (gates, _):
                first_attempt.touch()
                wait_for(
                    lambda: statuses(engine, [failing]).get(failing) == "RETRYING",
                    what="the failed task to be RETRYING",
                )
                _wait_events(engine, gates, "STARTED")
                body, asked, answered = _cancel(client, failing)
                assert body["stage"] == "RETRYING"
                recorded = _wait_status(engine, failing, "CANCELLED")
                _report(
                    "RETRYING (its retry waiting in the bridge)",
                    engine,
                    failing,
                    asked,
                    recorded=recorded,
                )
            assert wait_terminal(engine, gates) == dict.fromkeys(gates, "SUCCEEDED")
            one_slot.wait_bridge_caught_up()  # the retry request was met, and dropped

        timeline = _ended_once(engine, failing, "CANCELLED")
        assert [r.attempt for r in timeline if r.status == "STARTED"] == [1]
        assert _count(timeline, "QUEUED") == 1  # the retry was never dispatched
        assert _count(timeline, "RETRYING") == 1
        assert [attempt for _, _, attempt in _runs(runs, failing)] == [1]
        assert all(at < answered for at in _starts(runs, failing))
        assert _requests_produced(one_slot, "alpha", failing) == 2  # the first and its retry

    def test_a_task_cancelled_while_it_runs_and_then_fails_sends_no_retry(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        with one_slot.client() as client:
            failing, release = _failing_when_released(engine, client, runs)
            body, _, answered = _cancel(client, failing)
            assert body["stage"] == "STARTED"
            release.touch()  # the routine fails now, with retries left
            # One slot: the next task runs once the worker is done with the failed one.
            (after,) = submit(client, [_traced(runs, "medium")])
            assert wait_terminal(engine, [after]) == {after: "SUCCEEDED"}

        timeline = _ended_once(engine, failing, "CANCELLED")
        assert _count(timeline, "RETRYING") == 0
        assert [attempt for _, _, attempt in _runs(runs, failing)] == [1]
        assert all(at < answered for at in _starts(runs, failing))
        assert _requests_produced(one_slot, "alpha", failing) == 1  # no retry was sent
        assert _kept_outcome(one_slot, failing) == "CANCELLED"

    def test_a_running_routine_that_checks_the_flag_stops_and_its_task_ends_cancelled(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        with one_slot.client() as client:
            (task_id,) = submit(
                client,
                [
                    {
                        "team": "alpha",
                        "routine": "until_cancelled",
                        "payload": {"runs": str(runs), "seconds": 100},
                    }
                ],
            )
            wait_for(lambda: _starts(runs, task_id), what="the routine to start")
            body, asked, answered = _cancel(client, task_id)
            assert body["stage"] == "STARTED"
            recorded = _wait_status(engine, task_id, "CANCELLED")
            notes = wait_for(
                lambda: [n for n in _runs(runs, task_id) if n[0] != "start"],
                what="the routine to see the cancel",
            )
            assert [what for what, _, _ in notes] == ["stopped"]
            _report(
                "STARTED (cooperative)",
                engine,
                task_id,
                asked,
                recorded=recorded,
                **{"routine returned": notes[0][1]},
            )
            (after,) = submit(client, [_traced(runs, "medium")])  # the slot is free again
            assert wait_terminal(engine, [after]) == {after: "SUCCEEDED"}

        timeline = _ended_once(engine, task_id, "CANCELLED")
        assert _count(timeline, "SUCCEEDED") == 0
        assert len(_starts(runs, task_id)) == 1
        assert all(at < answered for at in _starts(runs, task_id))
        assert _kept_outcome(one_slot, task_id) == "CANCELLED"

    @pytest.mark.parametrize(
        ("swallow", "stopped_by"),
        [(False, "interrupted"), (True, "killed")],
        ids=["interrupted", "killed"],
    )
    def test_a_running_routine_that_ignores_the_cancel_is_stopped_with_terminate(
        self, one_slot: Instance, runs: Path, swallow: bool, stopped_by: str
    ) -> None:
        engine = one_slot.engine
        sleep_seconds = 100
        with one_slot.client() as client:
            (task_id,) = submit(
                client,
                [
                    {
                        "team": "alpha",
                        "routine": "ignores_cancel",
                        "payload": {
                            "runs": str(runs),
                            "seconds": sleep_seconds,
                            "swallow": swallow,
                        },
                    }
                ],
            )
            (started,) = wait_for(lambda: _starts(runs, task_id), what="the routine to start")
            body, asked, _ = _cancel(client, task_id, terminate=True)
            assert body["stage"] == "STARTED"
            recorded = _wait_status(engine, task_id, "CANCELLED")
            interrupted = wait_for(
                lambda: [
                    at for what, at, _ in _runs(runs, task_id) if what.startswith("interrupted")
                ],
                what="the routine to be interrupted",
            )
            # One slot: this task runs only once the cancelled routine's process has
            # stopped (interrupted, or killed and replaced), long before its sleep ends.
            (after,) = submit(client, [_traced(runs, "medium")])
            assert wait_terminal(engine, [after], timeout=sleep_seconds / 2) == {after: "SUCCEEDED"}
            (after_started,) = _starts(runs, after)
            _report(
                f"STARTED (terminate, {stopped_by})",
                engine,
                task_id,
                asked,
                recorded=recorded,
                **{"routine interrupted": interrupted[0], "next task started": after_started},
            )

        timeline = _ended_once(engine, task_id, "CANCELLED")
        assert _count(timeline, "SUCCEEDED") == 0 and _count(timeline, "FAILED") == 0
        notes = [what for what, _, _ in _runs(runs, task_id)]
        assert notes[0] == "start" and "finished" not in notes
        assert notes.count("start") == 1  # a redelivery after the kill did not run it again
        assert notes[1] == "interrupted:TaskCancelled"
        assert after_started - started < sleep_seconds
        assert _kept_outcome(one_slot, task_id) == "CANCELLED"

    def test_a_batch_cancel_answers_each_task_and_cancelled_scheduled_tasks_never_run(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        alpha_key = create_key(engine, team="alpha", admin=False)[1]
        bravo_key = create_key(engine, team="bravo", admin=False)[1]
        later = {"delay_seconds": 8}  # room to cancel them first on a slow machine
        with one_slot.client(alpha_key) as alpha, one_slot.client(bravo_key) as bravo:
            (done,) = submit(alpha, [_traced(runs)])
            scheduled = submit(alpha, [{**_traced(runs), **later} for _ in range(3)])
            (theirs,) = submit(bravo, [{**_traced(runs, team="bravo"), **later}])
            unknown = str(uuid.uuid4())
            assert wait_terminal(engine, [done]) == {done: "SUCCEEDED"}
            _wait_events(engine, [*scheduled, theirs], "SCHEDULED")

            asked = [*scheduled, done, unknown, theirs]
            answers = []
            for _ in range(2):  # a repeat answers the same
                response = alpha.post("/api/v1/tasks/cancel", json={"task_ids": asked})
                assert response.status_code == 200, response.text
                answers.append(response.json())
            for answer in answers:
                assert answer["cancelled"] == 3
                assert [r["task_id"] for r in answer["results"]] == asked
                assert [r["status_code"] for r in answer["results"]] == [
                    202,
                    202,
                    202,
                    409,
                    404,
                    404,
                ]
                assert all(r["task"]["stage"] == "SCHEDULED" for r in answer["results"][:3])
                assert answer["results"][3]["error"]["details"]["status"] == "SUCCEEDED"
            answered = time.time()
            assert statuses(engine, [theirs]) == {theirs: "SCHEDULED"}  # not alpha's to cancel
            _cancel(bravo, theirs)
            # Their run_at passes; the bridge meets them then, and commits past them.
            run_at = max(r.run_at for r in _task_rows(engine, scheduled))
            wait_for(lambda: datetime.now(UTC) > run_at, timeout=30, what="their run_at")
            one_slot.wait_bridge_caught_up()

        for task_id in [*scheduled, theirs]:
            timeline = _ended_once(engine, task_id, "CANCELLED")
            assert _count(timeline, "QUEUED") == 0 and _count(timeline, "STARTED") == 0
            assert _runs(runs, task_id) == []
        assert statuses(engine, [done]) == {done: "SUCCEEDED"}
        assert all(at < answered for at in _starts(runs, done))

    def test_under_a_backlog_expired_tasks_never_run_and_the_others_all_succeed(
        self, one_slot: Instance, runs: Path
    ) -> None:
        engine = one_slot.engine
        short = {"max_wait_seconds": 1}
        with one_slot.client() as client:
            with _held_slots(one_slot, client, runs, count=1, running=1):
                # The first takes the fast lane: it expires on the Celery queue, and the
                # worker ends it at the claim; the rest expire waiting in the bridge.
                (on_queue,) = submit(client, [{**_traced(runs), **short}])
                _wait_events(engine, [on_queue], "QUEUED")
                items = [{**_traced(runs), **(short if i % 2 else {})} for i in range(20)]
                ids = submit(client, items)
                expiring = [on_queue, *(t for i, t in enumerate(ids) if i % 2)]
                others = [t for i, t in enumerate(ids) if not i % 2]
                _wait_events(engine, ids, "ACCEPTED")
                deadline = max(r.expires_at for r in _task_rows(engine, expiring))
                wait_for(
                    lambda: datetime.now(UTC) > deadline, timeout=30, what="the tasks to expire"
                )
            ended = wait_terminal(engine, expiring + others, timeout=90)

        assert {t: ended[t] for t in expiring} == dict.fromkeys(expiring, "EXPIRED")
        assert {t: ended[t] for t in others} == dict.fromkeys(others, "SUCCEEDED")
        timelines = events(engine, expiring + others)
        for task_id in expiring:
            _ended_once(engine, task_id, "EXPIRED")
            assert _count(timelines[task_id], "STARTED") == 0
            assert _runs(runs, task_id) == []
        where = {
            task_id: next(r.detail for r in timelines[task_id] if r.status == "EXPIRED")["stage"]
            for task_id in expiring
        }
        assert where.pop(on_queue) == "claimed by a worker"
        assert set(where.values()) == {"waiting in the bridge"}
        for task_id in others:
            assert len(_starts(runs, task_id)) == 1
            assert _count(timelines[task_id], "STARTED") == 1


def _task_rows(engine: Engine, ids: list[str]) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT task_id::text, status, run_at, expires_at, released_at FROM tasks "
                    "WHERE task_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": ids},
            )
        )


# The default stack: answers that need no routine of ours.


def test_a_cancel_of_an_ended_task_is_409_naming_its_status_and_of_another_teams_404(
    api_url: str, team_key: Callable[[str], str], engine: Engine
) -> None:
    def client(team: str) -> httpx.Client:
        return httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {team_key(team)}"}, timeout=30
        )

    with client("alpha") as alpha, client("bravo") as bravo:
        (task_id,) = submit(alpha, [{"team": "alpha", "routine": "noop"}])
        response = bravo.post(f"/api/v1/tasks/{task_id}/cancel", json={})
        assert response.status_code == 404, response.text
        assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}
        response = alpha.post(f"/api/v1/tasks/{task_id}/cancel", json={"terminate": True})
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["details"] == {"status": "SUCCEEDED"}
        assert "SUCCEEDED" in error["message"]
    assert statuses(engine, [task_id]) == {task_id: "SUCCEEDED"}


# Two slots, a wide dispatch window and a short hold: tasks due later than HOLD_SECONDS
# are parked in Postgres and released by the recorder half that before their time.
HOLD_SECONDS = 6


@pytest.fixture(scope="class")
def platform(stack: Settings) -> Iterator[Instance]:
    with pipeline_instance(
        stack,
        "schedule",
        ROUTINES,
        CANCEL_GRACE_SECONDS=str(GRACE_SECONDS),
        WORKER_CONCURRENCY="2",
        DISPATCH_HEADROOM="6",
        SCHEDULE_HOLD_SECONDS=str(HOLD_SECONDS),
    ) as instance:
        yield instance


class TestScheduledAndKilled:
    def test_5000_tasks_due_over_20s_each_run_once_and_not_early_through_a_bridge_restart(
        self, platform: Instance
    ) -> None:
        count, window = 5000, 20.0
        # The first ones are due within the hold (the bridge keeps them), the rest parked.
        first_due = datetime.now(UTC) + timedelta(seconds=3)
        teams = ("alpha", "bravo", "charlie")
        items = [
            {
                "team": teams[i % len(teams)],
                "routine": "noop",
                "run_at": (first_due + timedelta(seconds=window * i / count)).isoformat(),
            }
            for i in range(count)
        ]
        with platform.client() as client:
            ids = submit_batch(client, items)
        wait_for(
            lambda: datetime.now(UTC) > first_due + timedelta(seconds=window * 0.4),
            timeout=60,
            what="the window to be under way",
        )
        killed_at = datetime.now(UTC)
        killed = platform.kill("bridge")
        platform.up(["bridge"])
        assert platform.pid("bridge") != killed
        ended = wait_terminal(platform.engine, ids, timeout=180)
        assert set(ended.values()) == {"SUCCEEDED"}

        with platform.engine.connect() as conn:
            rows = conn.execute(
                text(
                    """
                    SELECT t.task_id, t.run_at, t.attempts, t.released_at IS NOT NULL AS released,
                           count(*) FILTER (WHERE e.status = 'STARTED') AS starts,
                           min(e.at) FILTER (WHERE e.status = 'STARTED') AS started,
                           min(e.at) FILTER (WHERE e.status = 'QUEUED') AS queued,
                           min(e.detail ->> 'held_by') FILTER (WHERE e.status = 'SCHEDULED')
                             AS held_by
                      FROM tasks t JOIN task_events e USING (task_id)
                     WHERE t.task_id = ANY(CAST(:ids AS uuid[]))
                     GROUP BY t.task_id
                    """
                ),
                {"ids": ids},
            ).all()
        assert len(rows) == count
        assert [r.task_id for r in rows if r.starts != 1 or r.attempts != 1] == []
        assert [r.task_id for r in rows if r.run_at is None] == []
        early = [
            (str(r.task_id), r.started - r.run_at)
            for r in rows
            if r.started < r.run_at - CLOCK_RESOLUTION
        ]

        # The figures: before the kill, while the bridge was away (until the new one
        # dispatched its first task), and after.
        back = min(r.queued for r in rows if r.queued is not None and r.queued > killed_at)
        phases = {
            "due before the kill": [r for r in rows if r.run_at < killed_at],
            f"due while the bridge was away ({(back - killed_at).total_seconds():.1f} s)": [
                r for r in rows if killed_at <= r.run_at < back
            ],
            "due after it was back": [r for r in rows if r.run_at >= back],
            "all": rows,
        }
        held = {
            where: sum(1 for r in rows if r.held_by == where) for where in ("bridge", "postgres")
        }
        no_queued = sum(1 for r in rows if r.queued is None)
        print(
            f"\nschedule accuracy, {count} tasks due over {window:.0f} s (held by the bridge "
            f"{held['bridge']}, parked {held['postgres']}, released "
            f"{sum(1 for r in rows if r.released)}), bridge killed -9 at "
            f"{(killed_at - first_due).total_seconds():.1f} s ({no_queued} timelines lack "
            "their QUEUED event); start - run_at:"
        )
        for phase, chosen in phases.items():
            lags = sorted((r.started - r.run_at).total_seconds() * 1000 for r in chosen)
            if lags:
                p50, p99 = percentile(lags, 50), percentile(lags, 99)
                print(
                    f"  {phase}: {len(lags)} tasks, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                    f"min {lags[0]:.1f} ms, max {lags[-1]:.1f} ms"
                )
        for where in ("bridge", "postgres"):
            sent = sorted(
                (r.queued - r.run_at).total_seconds() * 1000
                for r in rows
                if r.held_by == where and r.queued is not None
            )
            print(
                f"  held by {where}: dispatched (QUEUED) - run_at min {sent[0]:.1f} ms, "
                f"p50 {percentile(sent, 50):.1f} ms; {sum(1 for x in sent if x < 0)} before run_at"
            )
        assert early == [], f"{len(early)} started before their run_at: {early[:5]}"

    def test_a_task_due_within_the_hold_is_held_a_later_one_parked_and_released_near_its_time(
        self, platform: Instance, runs: Path
    ) -> None:
        """And a parked task cancelled while it waits is never released, nor run."""
        engine = platform.engine
        soon = {"delay_seconds": HOLD_SECONDS / 2}  # within the hold: the bridge keeps it
        later = {"delay_seconds": HOLD_SECONDS + 4}  # beyond it: parked in Postgres
        with platform.client() as client:
            held, parked, cancelled = submit(
                client, [{**_traced(runs), **soon}] + [{**_traced(runs), **later}] * 2
            )
            _wait_events(engine, [held, parked, cancelled], "SCHEDULED")
            where = {
                task_id: next(r.detail for r in rows if r.status == "SCHEDULED")
                for task_id, rows in events(engine, [held, parked, cancelled]).items()
            }
            assert where == {
                held: {"held_by": "bridge"},
                parked: {"held_by": "postgres"},
                cancelled: {"held_by": "postgres"},
            }
            body, asked, _ = _cancel(client, cancelled)
            assert body["stage"] == "SCHEDULED"
            recorded = _wait_status(engine, cancelled, "CANCELLED")
            _report("SCHEDULED (parked in Postgres)", engine, cancelled, asked, recorded=recorded)
            # Both were due together: the releaser's pass that sent one would have sent both.
            ended = wait_terminal(engine, [held, parked], timeout=60)
            assert ended == {held: "SUCCEEDED", parked: "SUCCEEDED"}
            platform.wait_bridge_caught_up()

        rows = {r.task_id: r for r in _task_rows(engine, [held, parked, cancelled])}
        for task_id in (held, parked):
            timeline = _ended_once(engine, task_id, "SUCCEEDED")
            (started,) = [r.at for r in timeline if r.status == "STARTED"]
            assert started >= rows[task_id].run_at - CLOCK_RESOLUTION
            (first_run,) = _starts(runs, task_id)
            assert first_run >= rows[task_id].run_at.timestamp()
            late = (started - rows[task_id].run_at).total_seconds()
            print(f"\n{where[task_id]}: started {late * 1000:.1f} ms after its run_at")
        assert rows[parked].released_at is not None
        assert _requests_produced(platform, "alpha", parked) == 2  # submitted, released
        lead = (rows[parked].run_at - rows[parked].released_at).total_seconds()
        print(f"parked task released {lead:.2f} s before its run_at")
        # The bridge held the other one (its offset uncommitted) until its time.
        assert rows[held].released_at is None
        assert _requests_produced(platform, "alpha", held) == 1
        timeline = _ended_once(engine, cancelled, "CANCELLED")
        assert _count(timeline, "QUEUED") == 0
        assert _runs(runs, cancelled) == []
        assert rows[cancelled].released_at is None
        assert _requests_produced(platform, "alpha", cancelled) == 1

    def test_a_cancel_holds_when_the_bridge_and_the_worker_are_killed_before_their_next_step(
        self, platform: Instance, runs: Path
    ) -> None:
        engine = platform.engine
        with platform.client() as client:
            # 2 gates run and 6 wait on the high queue: the window (2 slots + 6) is full.
            with _held_slots(platform, client, runs, count=8, running=2) as (gates, _):
                probes = submit(client, [_traced(runs, "medium") for _ in range(6)])
                _wait_events(engine, probes, "ACCEPTED")
                wait_for(
                    lambda: len(_with_event(engine, probes, "QUEUED")) == 2,
                    what="two tasks (the fast lane's room) on the medium queue",
                )
                on_queue = _with_event(engine, probes, "QUEUED")
                in_bridge = [t for t in probes if t not in on_queue]
                cancelled = [on_queue[0], *in_bridge[:2]]
                controls = [t for t in probes if t not in cancelled]
                answered = {}
                for task_id in cancelled:
                    body, _, answered[task_id] = _cancel(client, task_id)
                    assert body["stage"] == ("QUEUED" if task_id in on_queue else "ACCEPTED")
                killed = {name: platform.kill(name) for name in ("bridge", "worker-1")}
            # The gates may go now (the two that were running are re-dispatched once
            # their leases run out), and the stage comes back.
            platform.up(["bridge", "worker-1"])
            assert all(platform.pid(name) != pid for name, pid in killed.items())
            ended = wait_terminal(engine, probes + gates, timeout=120)
            platform.wait_bridge_caught_up()

        assert {t: ended[t] for t in cancelled} == dict.fromkeys(cancelled, "CANCELLED")
        assert {t: ended[t] for t in controls} == dict.fromkeys(controls, "SUCCEEDED")
        assert set(ended[t] for t in gates) == {"SUCCEEDED"}
        for task_id in cancelled:
            timeline = _ended_once(engine, task_id, "CANCELLED")
            assert _count(timeline, "STARTED") == 0
            assert _runs(runs, task_id) == []
            assert _kept_outcome(platform, task_id) == "CANCELLED"
        for task_id in controls:
            assert len(_starts(runs, task_id)) == 1
