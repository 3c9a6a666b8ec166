"""Following tasks: events in any order, twice, or of other clients' tasks."""

from __future__ import annotations

from core.status import Status
from simulator.samples import RunRecord, SendSample
from simulator.tracker import Event, Tracker


def make() -> Tracker:
    return Tracker(RunRecord("d", "", 1.0, "kafka", started_at=1000.0, planned=2))


def sample(task_id: str | None = "t1") -> SendSample:
    return SendSample(0, "alpha", "noop", "high", scheduled=0, sent=0, task_id=task_id)


def event(status: Status, at: float, attempt: int = 1, task_id: str = "t1") -> Event:
    return Event(f"{task_id}:{status}:{attempt}", task_id, status, at, attempt, "high")


def test_a_task_is_followed_to_its_terminal_status() -> None:
    tracker = make()
    tracker.answered(sample(), accepted_at=1000.0)
    assert tracker.unfinished == 1
    tracker.apply([event(Status.QUEUED, 1000.1), event(Status.STARTED, 1000.2)])
    assert tracker.counts[("high", Status.STARTED)] == 1
    tracker.apply([event(Status.SUCCEEDED, 1000.3)])
    task = tracker.run.tasks["t1"]
    assert (task.status, task.first_started, task.finished_at) == (
        Status.SUCCEEDED,
        1000.2,
        1000.3,
    )
    assert tracker.unfinished == 0
    assert tracker.counts[("high", Status.SUCCEEDED)] == 1
    assert sum(tracker.counts.values()) == 1


def test_events_out_of_order() -> None:
    tracker = make()
    tracker.answered(sample(), accepted_at=1.0)
    tracker.apply(
        [
            event(Status.SUCCEEDED, 5.0, attempt=2),
            event(Status.STARTED, 4.0, attempt=2),
            event(Status.ACCEPTED, 1.0, attempt=0),
            event(Status.RETRYING, 3.0, attempt=1),
            event(Status.STARTED, 2.0, attempt=1),
        ]
    )
    task = tracker.run.tasks["t1"]
    assert task.status is Status.SUCCEEDED
    assert (task.first_started, task.last_started, task.attempts) == (2.0, 4.0, 2)
    assert tracker.unfinished == 0
    assert tracker.run.anomalies.events_after_terminal == 0


def test_a_late_older_event_does_not_move_a_task_back() -> None:
    tracker = make()
    tracker.answered(sample(), accepted_at=1.0)
    tracker.apply([event(Status.QUEUED, 3.0, attempt=2), event(Status.RETRYING, 2.0, attempt=1)])
    assert tracker.run.tasks["t1"].status is Status.QUEUED


def test_duplicates_and_conflicts_are_counted() -> None:
    tracker = make()
    tracker.answered(sample(), accepted_at=1.0)
    done = event(Status.SUCCEEDED, 2.0)
    tracker.apply([done, done])
    tracker.apply([Event("other", "t1", Status.FAILED, 2.5, 1)])
    tracker.apply([Event("late", "t1", Status.STARTED, 9.0, 3)])
    anomalies = tracker.run.anomalies
    assert (anomalies.duplicate_events, anomalies.conflicting_terminal) == (1, 1)
    assert anomalies.events_after_terminal == 1
    assert tracker.run.tasks["t1"].status is Status.SUCCEEDED


def test_rejections_and_other_clients_events() -> None:
    tracker = make()
    tracker.answered(sample(task_id=None), accepted_at=None)
    assert tracker.rejected["high"] == 1 and tracker.run.tasks == {}
    tracker.apply([event(Status.SUCCEEDED, 10.0, task_id="theirs")])
    assert tracker.run.tasks == {} and tracker.unfinished == 0


def test_a_scheduled_task_waits_then_runs() -> None:
    tracker = make()
    tracker.answered(
        SendSample(0, "alpha", "noop", "high", 0, 0, task_id="t1", delay=5.0, max_wait=2.0),
        accepted_at=100.0,
    )
    task = tracker.run.tasks["t1"]
    assert (task.run_at, task.expires_at, task.due) == (105.0, 107.0, 105.0)
    tracker.apply([event(Status.SCHEDULED, 100.1, attempt=0)])
    assert task.status is Status.SCHEDULED and tracker.unfinished == 1
    assert tracker.counts[("high", Status.SCHEDULED)] == 1
    tracker.apply([event(Status.STARTED, 105.2), event(Status.QUEUED, 105.0)])
    assert task.status is Status.STARTED and task.first_started == 105.2
    tracker.apply([event(Status.SCHEDULED, 100.1, attempt=0)])  # redelivered: no step back
    assert task.status is Status.STARTED


def test_no_delay_or_a_zero_delay_is_not_a_schedule() -> None:
    tracker = make()
    for task_id, delay in (("t1", None), ("t2", 0.0)):
        sample = SendSample(0, "alpha", "noop", "high", 0, 0, task_id=task_id, delay=delay)
        tracker.answered(sample, accepted_at=100.0)
    assert [(t.run_at, t.due) for t in tracker.run.tasks.values()] == [(None, 100.0)] * 2


def test_cancelled_and_expired_tasks_are_finished() -> None:
    tracker = make()
    tracker.answered(sample("t1"), accepted_at=1.0)
    tracker.answered(sample("t2"), accepted_at=1.0)
    assert tracker.unfinished == 2
    tracker.apply([event(Status.SCHEDULED, 1.1, 0, "t1"), event(Status.CANCELLED, 2.0, 0, "t1")])
    tracker.apply([event(Status.QUEUED, 1.1, 1, "t2"), event(Status.EXPIRED, 3.0, 1, "t2")])
    assert tracker.unfinished == 0 and tracker.unfinished_tasks() == []
    statuses = {t.task_id: (t.status, t.finished_at) for t in tracker.run.tasks.values()}
    assert statuses == {"t1": (Status.CANCELLED, 2.0), "t2": (Status.EXPIRED, 3.0)}
    tracker.apply([event(Status.SUCCEEDED, 4.0, 1, "t1")])  # a cancelled task must not succeed
    assert tracker.run.anomalies.conflicting_terminal == 1
    assert tracker.run.tasks["t1"].status is Status.CANCELLED
