"""Following: only our tasks' messages are decoded; early ones wait until we watch them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.messages import StatusEvent
from core.status import Status
from simulator.follow import STASH_SECONDS, KafkaFollower, events_from_timeline

OURS = "01a21d6f-62f6-7d7e-903b-34c60090eabf"
THEIRS = "01a21d6f-505e-74b4-ab5e-3e4d5598c28b"


@dataclass
class Message:
    """Stands in for a confluent_kafka Message."""

    task_id: str | None
    raw: bytes

    def key(self) -> bytes | None:
        return None if self.task_id is None else self.task_id.encode()

    def value(self) -> bytes:
        return self.raw

    def error(self) -> None:
        return None


def message(task_id: str, status: Status, attempt: int = 1) -> Message:
    event = StatusEvent(task_id, status, "alpha", "noop", "high", attempt=attempt)
    return Message(task_id, event.encode())


def test_events_are_decoded_only_for_watched_tasks() -> None:
    follower = KafkaFollower("127.0.0.1:9092", "tasks.status")
    early = follower.sort([message(OURS, Status.ACCEPTED, 0), message(THEIRS, Status.QUEUED)], 0)
    assert early == []  # nobody watches either yet
    before = follower.watch(OURS)
    assert [(e.task_id, e.status) for e in before] == [(OURS, Status.ACCEPTED)]
    later = follower.sort([message(OURS, Status.QUEUED), message(THEIRS, Status.STARTED)], 1)
    assert [(e.task_id, e.status) for e in later] == [(OURS, Status.QUEUED)]
    assert follower.watch(OURS) == []


def test_unclaimed_events_are_dropped_after_a_while() -> None:
    follower = KafkaFollower("127.0.0.1:9092", "tasks.status")
    follower.sort([message(THEIRS, Status.QUEUED)], 0)
    follower.sort([message(OURS, Status.QUEUED)], STASH_SECONDS / 2)
    follower.sort([], STASH_SECONDS + 1)
    assert follower.watch(THEIRS) == []  # stored longer than STASH_SECONDS: dropped
    # Stored for less: kept, so the empty answer above is the drop, not a failure to store.
    assert [(e.task_id, e.status) for e in follower.watch(OURS)] == [(OURS, Status.QUEUED)]


def test_malformed_messages_are_counted_not_raised() -> None:
    follower = KafkaFollower("127.0.0.1:9092", "tasks.status")
    follower.watch(OURS)
    assert follower.sort([Message(OURS, b"not json"), Message(None, b"{}")], 0) == []
    assert follower.malformed == 2


def test_api_timelines_become_events_with_stable_ids() -> None:
    timeline: list[dict[str, Any]] = [
        {"status": "ACCEPTED", "at": "2026-01-01T00:00:00+00:00", "attempt": 0},
        {"status": "STARTED", "at": "2026-01-01T00:00:01+00:00", "attempt": 1, "queue": "low"},
        {"status": "BOGUS", "at": "2026-01-01T00:00:02+00:00"},
    ]
    events = events_from_timeline(OURS, timeline)
    assert [(e.status, e.attempt, e.queue) for e in events] == [
        (Status.ACCEPTED, 0, None),
        (Status.STARTED, 1, "low"),
    ]
    assert events[1].at - events[0].at == 1.0
    assert events == events_from_timeline(OURS, timeline)
