"""The recorder's rules for late, repeated and out-of-order events (pure part)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.messages import StatusEvent
from core.status import Status, progress
from recorder.writer import _Known, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = "01a21d6e-a882-797e-8c9d-f3600cc7476a"


def _event(status: Status, seconds: float, attempt: int = 1, **kw: object) -> StatusEvent:
    return StatusEvent(
        task_id=TASK,
        status=status,
        team="alpha",
        routine="noop",
        priority="high",
        at=T0 + timedelta(seconds=seconds),
        attempt=attempt,
        accepted_at=T0,
        **kw,  # type: ignore[arg-type]
    )


def test_out_of_order_events_all_join_the_timeline_and_the_status_moves_forward() -> None:
    events = [
        _event(Status.STARTED, 2),
        _event(Status.ACCEPTED, 0, attempt=0),
        _event(Status.SUCCEEDED, 3, result={"x": 1}),
        _event(Status.QUEUED, 1, queue="high"),  # arrives last, happened second
    ]
    rows, tasks, dropped = plan(events, {})
    assert dropped == 0
    assert sorted(r["status"] for r in rows) == ["ACCEPTED", "QUEUED", "STARTED", "SUCCEEDED"]
    task = tasks[TASK]
    assert task["status"] == "SUCCEEDED"
    assert task["result"] == {"x": 1}
    assert task["started_at"] == T0 + timedelta(seconds=2)


def test_repeats_and_a_second_terminal_event_are_dropped() -> None:
    first = _event(Status.SUCCEEDED, 3)
    events = [_event(Status.STARTED, 2), first, first, _event(Status.FAILED, 4, error="late")]
    rows, tasks, dropped = plan(events, {})
    assert [r["status"] for r in rows] == ["STARTED", "SUCCEEDED"]
    assert dropped == 2
    assert tasks[TASK]["status"] == "SUCCEEDED"


def test_a_task_already_terminal_in_the_database_takes_only_late_history() -> None:
    known = {TASK: _Known(progress(Status.SUCCEEDED, 1), finished_at=T0 + timedelta(seconds=3))}
    events = [
        _event(Status.QUEUED, 1, queue="high"),  # happened before the end: history
        _event(Status.STARTED, 5, attempt=2),  # after the end: a duplicate run, dropped
        _event(Status.FAILED, 6, attempt=2),
    ]
    rows, tasks, dropped = plan(events, known)
    assert [r["status"] for r in rows] == ["QUEUED"]
    assert dropped == 2
    # The row brings no status of its own (not even QUEUED's progress): the upsert keeps
    # the stored status, result and finish time, and the task stays terminal here too.
    row = tasks[TASK]
    assert row["progress"] == 0 < progress(Status.QUEUED, 1)
    assert row["result"] is None and row["finished_at"] is None
    assert known[TASK] == _Known(progress(Status.SUCCEEDED, 1), T0 + timedelta(seconds=3))


def test_a_late_queued_never_hides_a_later_status() -> None:
    known = {TASK: _Known(progress(Status.STARTED, 1), finished_at=None)}
    rows, tasks, _ = plan([_event(Status.QUEUED, 1, queue="high")], known)
    assert len(rows) == 1
    assert tasks[TASK]["progress"] < progress(Status.STARTED, 1)
