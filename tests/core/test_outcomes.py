"""core.outcomes.replay: what is announced again for a kept outcome."""

from __future__ import annotations

import uuid

import orjson
import pytest

from core.messages import MalformedMessage, StatusEvent, decode_event
from core.outcomes import replay
from core.status import Status


def event(status: Status, task_id: str, **fields: object) -> StatusEvent:
    return StatusEvent(
        task_id=task_id, status=status, team="alpha", routine="noop", priority="high",
        attempt=2, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_an_outcome_kept_with_its_runs_start_replays_the_start_then_the_outcome() -> None:
    task_id = str(uuid.uuid4())
    started = event(Status.STARTED, task_id, detail={"worker": "w1@host", "pid": 7})
    ended = event(Status.SUCCEEDED, task_id, result={"n": 1})
    kept = ended.encode(started=started)

    assert replay(kept) == [started, ended]
    assert decode_event(kept) == ended  # every other reader sees the outcome alone


def test_an_outcome_kept_without_a_start_replays_the_outcome_alone() -> None:
    ended = event(Status.CANCELLED, str(uuid.uuid4()))  # a cancel: no run
    assert replay(ended.encode()) == [ended]


@pytest.mark.parametrize(
    "started",
    [{"detail": None}, {"at": "yesterday"}, {"at": "2026-12-01T10:00:00"}, "STARTED", None],
)
def test_a_start_that_cannot_be_read_leaves_the_outcome_standing(started: object) -> None:
    ended = event(Status.SUCCEEDED, str(uuid.uuid4()))
    kept = orjson.loads(ended.encode())
    kept["started"] = started  # no time, not a time, no zone, not an object, nothing
    assert replay(orjson.dumps(kept)) == [ended]


def test_an_unreadable_outcome_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        replay(b'{"status": "SUCCEEDED"}')
