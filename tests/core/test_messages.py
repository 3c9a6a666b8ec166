"""The request and status-event formats on Kafka."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from core.messages import (
    CeleryEnvelope,
    MalformedMessage,
    StatusEvent,
    TaskRequest,
    decode_event,
    decode_request,
    idempotent_task_id,
    utcnow,
    uuid7,
)
from core.priority import Priority
from core.status import Status


def test_request_round_trip() -> None:
    request = TaskRequest(
        task_id=str(uuid7()),
        team="alpha",
        routine="echo",
        priority=Priority.HIGH,
        accepted_at=utcnow(),
        payload={"a": 1},
        idempotency_key="k",
        retries=2,
        not_before=utcnow(),
    )
    assert decode_request(request.encode()) == request


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"team": "alpha"}', "task_id is missing"),
        (b'{"task_id": "nope", "team": "alpha"}', "not a UUID"),
        (b'{"task_id": "01a21d6e-a882-797e-8c9d-f3600cc7476a"}', "team is missing"),
    ],
)
def test_malformed_requests_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_request(raw)


def test_malformed_request_keeps_the_task_id_when_readable() -> None:
    raw = (
        b'{"task_id": "01a21d6e-a882-797e-8c9d-f3600cc7476a", "team": "alpha", "routine": "x",'
        b' "priority": "urgent", "accepted_at": "2026-01-01T00:00:00+00:00"}'
    )
    with pytest.raises(MalformedMessage) as caught:
        decode_request(raw)
    assert caught.value.task_id == "01a21d6e-a882-797e-8c9d-f3600cc7476a"
    assert caught.value.team == "alpha"


def test_event_round_trip_and_stable_ids() -> None:
    event = StatusEvent(
        task_id=str(uuid7()),
        status=Status.STARTED,
        team="alpha",
        routine="noop",
        priority="high",
        attempt=2,
        queue="high",
    )
    decoded = decode_event(event.encode())
    assert decoded == event
    # The id comes from the task and the transition only: not from the time or the queue.
    again = replace(event, at=utcnow(), queue=None, event_id="")
    assert again.event_id == event.event_id
    third = replace(event, attempt=3, event_id="")
    assert third.event_id != event.event_id


def test_idempotent_ids_depend_on_team_and_key() -> None:
    assert idempotent_task_id("alpha", "k") == idempotent_task_id("alpha", "k")
    assert idempotent_task_id("alpha", "k") != idempotent_task_id("bravo", "k")
    ids = [uuid7() for _ in range(3)]
    assert all(i.version == 7 for i in ids)


def test_a_request_and_its_envelope_carry_its_schedule_and_deadline() -> None:
    now = utcnow()
    request = TaskRequest(
        task_id=str(uuid.uuid4()),
        team="alpha",
        routine="echo",
        priority=Priority.LOW,
        accepted_at=now,
        run_at=now + timedelta(minutes=5),
        expires_at=now + timedelta(minutes=6),
        released=True,
    )
    again = decode_request(request.encode())
    assert (again.run_at, again.expires_at, again.released) == (
        request.run_at,
        request.expires_at,
        True,
    )
    assert not again.is_first_delivery  # a released task was announced before it was parked
    envelope = CeleryEnvelope.from_json(CeleryEnvelope(request, Priority.LOW).to_json())
    assert (envelope.request.run_at, envelope.request.expires_at) == (
        request.run_at,
        request.expires_at,
    )
    assert envelope.request.expired(request.expires_at) and not envelope.request.expired(now)
