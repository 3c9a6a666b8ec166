"""The two message formats on Kafka: task requests (`tasks.<team>`) and status events
(`tasks.status`). Both are JSON objects; `decode_*` raise `MalformedMessage` with a reason.

Event ids are derived from the task id and the transition, so an event produced twice
(a redelivered message, a retried publish) is recorded once.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from core.limits import ERROR_MAX_CHARS, PAYLOAD_DEPTH_CEILING, deeper_than, truncate
from core.priority import Priority
from core.status import Status

EVENT_NAMESPACE = uuid.UUID("6f1c2d4e-8a7b-4c3d-9e2f-1a2b3c4d5e6f")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


class MalformedMessage(ValueError):
    """A message that cannot be turned into a task; `task_id` is set when it was readable."""

    def __init__(self, reason: str, *, task_id: str | None = None, team: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id
        self.team = team


_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: object) -> str:
    """`value` as a canonical lowercase UUID string; ValueError if it is not a UUID.
    Status events arrive by the thousand: the common (canonical) case skips uuid.UUID."""
    if isinstance(value, str) and _UUID_TEXT.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a UUID")
    return str(uuid.UUID(value))


def utcnow() -> datetime:
    return datetime.now(UTC)


_cached_isoformat = functools.lru_cache(maxsize=256)(datetime.isoformat)


def isoformat(moment: datetime) -> str:
    """moment.isoformat(), remembered for UTC times: a batch's tasks share one acceptance
    time. (Only UTC: equal instants in other offsets would share one text.)"""
    return _cached_isoformat(moment) if moment.tzinfo is UTC else moment.isoformat()


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): new rows land at the end of indexes."""
    return uuid.UUID(uuid7_text())


_random_bits = random.getrandbits


def uuid7_text() -> str:
    """uuid7() as its canonical string, built without a UUID object (one per task)."""
    # `random` (reseeded in every forked child) rather than os.urandom: ids need to be
    # unique, not secret, and a syscall per id gives the GIL away under load.
    ms = time.time_ns() // 1_000_000
    rand = _random_bits(74)
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
    h = f"{value | (rand & 0x3FFFFFFFFFFFFFFF):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def idempotent_task_id(team: str, idempotency_key: str) -> uuid.UUID:
    """The same team and key always name the same task."""
    return uuid.uuid5(EVENT_NAMESPACE, f"task\x00{team}\x00{idempotency_key}")


def event_id(task_id: str, label: str) -> str:
    """uuid5(EVENT_NAMESPACE, task id + label), computed without building UUID objects
    (this runs for every status event)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{task_id}\x00{label}".encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _parse_time(value: Any, name: str, task_id: str | None) -> datetime:
    if not isinstance(value, str):
        raise MalformedMessage(f"{name} must be an ISO-8601 string", task_id=task_id)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedMessage(
            f"{name} {value!r} is not an ISO-8601 time", task_id=task_id
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TaskRequest:
    """A request to run a task, as the API (or a retry, or the reconciler) produces it."""

    task_id: str
    team: str
    routine: str
    priority: Priority
    accepted_at: datetime
    payload: dict[str, Any] | None = None
    idempotency_key: str | None = None
    dispatch: int = 0  # 0 first; the reconciler's re-dispatches count up
    retries: int = 0  # failed attempts so far that were retried
    not_before: datetime | None = None  # a retry's backoff: not dispatched before
    note: str | None = None  # why it was sent again (the reconciler says)
    run_at: datetime | None = None  # a scheduled run: SCHEDULED until then
    expires_at: datetime | None = None  # not started by then: EXPIRED, never run
    released: bool = False  # a scheduled task the releaser sent back to the bridge

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "task_id": self.task_id,
            "team": self.team,
            "routine": self.routine,
            "priority": self.priority.value,
            "accepted_at": isoformat(self.accepted_at),
            "payload": self.payload,
        }
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.dispatch:
            body["dispatch"] = self.dispatch
        if self.retries:
            body["retries"] = self.retries
        if self.not_before is not None:
            body["not_before"] = self.not_before.isoformat()
        if self.note is not None:
            body["note"] = self.note
        if self.run_at is not None:
            body["run_at"] = isoformat(self.run_at)
        if self.expires_at is not None:
            body["expires_at"] = isoformat(self.expires_at)
        if self.released:
            body["released"] = True
        return orjson.dumps(body)

    @property
    def is_first_delivery(self) -> bool:
        return self.dispatch == 0 and self.retries == 0 and not self.released

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def sent_again(self, **changes: Any) -> TaskRequest:
        """This request as it is produced again (a retry, a re-dispatch, a replay):
        the same task unless `task_id` changes, with the given fields replaced."""
        return replace(self, **changes)


def _json_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise MalformedMessage("empty message")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedMessage("not a JSON object")
    return body


def decode_request(raw: bytes | None) -> TaskRequest:
    """Parse and check a request message; raises MalformedMessage naming the problem."""
    body = _json_object(raw)
    task_id = body.get("task_id")
    team = body.get("team") if isinstance(body.get("team"), str) else None
    if not isinstance(task_id, str):
        raise MalformedMessage("task_id is missing", team=team)
    try:
        task_id = str(uuid.UUID(task_id))
    except ValueError:
        raise MalformedMessage(f"task_id {task_id!r} is not a UUID", team=team) from None
    if team is None:
        raise MalformedMessage("team is missing", task_id=task_id)
    routine = body.get("routine")
    if not isinstance(routine, str) or not routine:
        raise MalformedMessage("routine is missing", task_id=task_id, team=team)
    try:
        priority = Priority(str(body.get("priority")))
    except ValueError:
        raise MalformedMessage(
            f"priority {body.get('priority')!r} is not high, medium or low",
            task_id=task_id,
            team=team,
        ) from None
    payload = body.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise MalformedMessage("payload must be a JSON object", task_id=task_id, team=team)
    if payload and deeper_than(PAYLOAD_DEPTH_CEILING, payload, raw or b""):
        # Deeper than the Celery envelope and the status events can be encoded.
        raise MalformedMessage(
            f"payload is nested more than {PAYLOAD_DEPTH_CEILING} levels deep",
            task_id=task_id,
            team=team,
        )
    numbers = {}
    for name in ("dispatch", "retries"):
        value = body.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedMessage(f"{name} must be a whole number", task_id=task_id, team=team)
        numbers[name] = value
    times = {
        name: _parse_time(body[name], name, task_id) if body.get(name) else None
        for name in ("not_before", "run_at", "expires_at")
    }
    key = body.get("idempotency_key")
    note = body.get("note")
    return TaskRequest(
        task_id=task_id,
        team=team,
        routine=routine,
        priority=priority,
        accepted_at=_parse_time(body.get("accepted_at"), "accepted_at", task_id),
        payload=payload,
        idempotency_key=key if isinstance(key, str) else None,
        dispatch=numbers["dispatch"],
        retries=numbers["retries"],
        note=note if isinstance(note, str) else None,
        released=body.get("released") is True,
        **times,
    )


ENVELOPE_VERSION = 1


@dataclass(frozen=True)
class CeleryEnvelope:
    """One task inside a Celery message (a message may carry several of one routine):
    what the bridge sends and a worker runs. Celery writes it as JSON (`to_json`)."""

    request: TaskRequest
    queue: Priority  # where the routing policy sent it (the request keeps the asked priority)

    def to_json(self) -> dict[str, Any]:
        request = self.request
        return {
            "v": ENVELOPE_VERSION,
            "task_id": request.task_id,
            "team": request.team,
            "routine": request.routine,
            "priority": request.priority.value,
            "queue": self.queue.value,
            "payload": request.payload,
            "accepted_at": isoformat(request.accepted_at),
            "dispatch": request.dispatch,
            "retries": request.retries,
            **({"expires_at": isoformat(request.expires_at)} if request.expires_at else {}),
            **({"run_at": isoformat(request.run_at)} if request.run_at else {}),
        }

    @classmethod
    def from_json(cls, body: Any) -> CeleryEnvelope:
        """Read an envelope; raises MalformedMessage naming the problem. (Envelopes
        queued before the version field existed have none: they are version 1.)"""
        if not isinstance(body, dict):
            raise MalformedMessage("a task envelope must be a JSON object")
        task_id = body.get("task_id") if isinstance(body.get("task_id"), str) else None
        if body.get("v", ENVELOPE_VERSION) != ENVELOPE_VERSION:
            raise MalformedMessage(f"unknown envelope version {body.get('v')!r}", task_id=task_id)
        try:
            request = TaskRequest(
                task_id=canonical_uuid(body["task_id"]),
                team=str(body["team"]),
                routine=str(body["routine"]),
                priority=Priority(body["priority"]),
                accepted_at=_parse_time(body["accepted_at"], "accepted_at", task_id),
                payload=body.get("payload"),
                dispatch=int(body.get("dispatch", 0)),
                retries=int(body.get("retries", 0)),
                expires_at=_parse_time(body["expires_at"], "expires_at", task_id)
                if body.get("expires_at")
                else None,
                run_at=_parse_time(body["run_at"], "run_at", task_id)
                if body.get("run_at")
                else None,
            )
            queue = Priority(body.get("queue") or body["priority"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"bad task envelope: {exc!r}", task_id=task_id) from None
        return cls(request, queue)


@dataclass(frozen=True)
class StatusEvent:
    """One transition of one task. Carries enough to create the task's row if the
    ACCEPTED event has not been recorded yet."""

    task_id: str
    status: Status
    team: str
    routine: str
    priority: str
    at: datetime = field(default_factory=utcnow)
    attempt: int = 0
    queue: str | None = None
    result: Any = None
    error: str | None = None
    detail: dict[str, Any] | None = None
    accepted_at: datetime | None = None
    payload: dict[str, Any] | None = None
    idempotency_key: str | None = None
    run_at: datetime | None = None
    expires_at: datetime | None = None
    event_id: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            object.__setattr__(self, "event_id", event_id(self.task_id, self.default_label()))

    def default_label(self) -> str:
        if self.status.terminal or self.status is Status.ACCEPTED:
            return self.status.value
        return f"{self.status.value}:{self.attempt}"

    @classmethod
    def for_request(cls, request: TaskRequest, status: Status, **fields: Any) -> StatusEvent:
        """An event of `request`'s task: its identity and acceptance time, plus `fields`."""
        return cls(
            task_id=request.task_id,
            status=status,
            team=request.team,
            routine=request.routine,
            priority=request.priority.value,
            accepted_at=request.accepted_at,
            run_at=request.run_at,
            expires_at=request.expires_at,
            **fields,
        )

    def refused_instead(self, reason: str) -> StatusEvent:
        """The FAILED event that ends this event's task when this one cannot be
        published or recorded: small, with the reason and nothing of the original's data."""
        return StatusEvent(
            task_id=self.task_id,
            status=Status.FAILED,
            team=self.team,
            routine=self.routine,
            priority=self.priority,
            attempt=self.attempt,
            queue=self.queue,
            error=reason,
            accepted_at=self.accepted_at,
        )

    def encode(self, *, started: StatusEvent | None = None) -> bytes:
        """The event as JSON; an error text is cut to ERROR_MAX_CHARS. Raises
        orjson.JSONEncodeError (a TypeError) for a result or detail it cannot write.
        `started`: the STARTED event of the run this outcome ends, carried along under
        "started" as what it does not share with the outcome, its time and detail (a kept
        outcome: core.outcomes.replay); decode_event ignores it."""
        body: dict[str, Any] = {
            "v": 1,
            "event_id": self.event_id,
            "task_id": self.task_id,
            "status": self.status.value,
            "at": self.at.isoformat(),
            "team": self.team,
            "routine": self.routine,
            "priority": self.priority,
            "attempt": self.attempt,
        }
        optional = {
            "queue": self.queue,
            "result": self.result,
            "error": truncate(self.error, ERROR_MAX_CHARS) if self.error else self.error,
            "detail": self.detail,
            "accepted_at": self.accepted_at.isoformat() if self.accepted_at else None,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
            "run_at": isoformat(self.run_at) if self.run_at else None,
            "expires_at": isoformat(self.expires_at) if self.expires_at else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if started is not None:
            body["started"] = {"at": started.at.isoformat(), "detail": started.detail}
        return orjson.dumps(body)


def decode_event(raw: bytes | None) -> StatusEvent:
    """Parse a status event; raises MalformedMessage naming the problem."""
    body = _json_object(raw)
    try:
        task_id = canonical_uuid(body["task_id"])
        times = {
            name: _parse_time(body[name], name, task_id) if body.get(name) else None
            for name in ("accepted_at", "run_at", "expires_at")
        }
        return StatusEvent(
            task_id=task_id,
            status=Status(body["status"]),
            team=str(body["team"]),
            routine=str(body["routine"]),
            priority=str(body["priority"]),
            at=_parse_time(body["at"], "at", task_id),
            attempt=int(body.get("attempt", 0)),
            queue=body.get("queue"),
            result=body.get("result"),
            error=body.get("error"),
            detail=body.get("detail"),
            payload=body.get("payload"),
            idempotency_key=body.get("idempotency_key"),
            event_id=canonical_uuid(body["event_id"]),
            **times,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad status event: {exc!r}") from None
