"""`/api/v1/tasks/<task_id>/events`: a task's recorded status events, as a JSON list or,
with `follow=1`, live as server-sent events until the task ends.

Visibility is that of GET /api/v1/tasks/<task_id>: another team's task is a 404.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

from flask import Blueprint, Response
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from app.api import principal
from app.auth import presented_key, stream_owner
from app.errors import BadRequest, NotFound, Unavailable
from app.http import json_response, query_args
from app.models import FOLLOW, RecordedEvent
from app.queries import load_events
from app.services import services
from app.sse import REVOKED, StillAllowed, sse_comment, sse_event, sse_response, sse_retry
from core.db import once_more_if_disconnected
from core.messages import TaskRequest, event_id
from core.schema import tasks
from core.status import Status

blueprint = Blueprint("task_events", __name__, url_prefix="/tasks")

FOLLOW_SECONDS = 600  # a follow stream's longest life
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 10.0


def _task_team(engine: Engine, task_id: uuid.UUID) -> str | None:
    def read() -> str | None:
        with engine.connect() as conn:
            return conn.execute(select(tasks.c.team).where(tasks.c.task_id == task_id)).scalar()

    return once_more_if_disconnected(read)


def _just_accepted(task_id: uuid.UUID) -> TaskRequest | None:
    """The request of a task accepted a moment ago that Postgres does not hold yet (the
    API's accepted-task cache, as GET /api/v1/tasks/<id> uses it)."""
    return services().submission.cache.requests([str(task_id)]).get(str(task_id))


def accepted_event(request: TaskRequest) -> RecordedEvent:
    """The ACCEPTED event of a just-accepted task, with the id the recorder will give it."""
    return {
        "event_id": event_id(request.task_id, Status.ACCEPTED.value),
        "status": Status.ACCEPTED.value,
        "at": request.accepted_at.isoformat(),
        "attempt": 0,
        "queue": None,
        "detail": None,
    }


@blueprint.get("/<task_id>/events")
def read_events(task_id: str) -> Response:
    args = query_args({"follow"})
    follow_text = args.get("follow", "0")
    if follow_text not in FOLLOW:
        raise BadRequest(f"follow: {follow_text!r} is not one of 1, true, 0, false")
    try:
        parsed = uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"no task {task_id!r}: task ids are UUIDs") from None
    engine = services().engine
    try:
        team = _task_team(engine, parsed)
        cached = _just_accepted(parsed) if team is None else None
        team = cached.team if cached is not None else team
        # Another team's task is reported as missing: its existence is not ours to reveal.
        if team is None or not principal().may_act_for(team):
            raise NotFound(f"no task {task_id}")
        if not FOLLOW[follow_text]:
            recorded = load_events(engine, parsed)
            if not recorded and cached is not None:
                recorded = [accepted_event(cached)]
            return json_response(recorded)
    except SQLAlchemyError:
        raise Unavailable("the task store cannot be reached; retry shortly") from None
    store, key, owner = services().keys, presented_key(), stream_owner(principal())
    allowed = StillAllowed(lambda: store.lookup(key, fresh_only=True) is not None)
    slots = services().stream_slots
    slots.take(owner)
    return sse_response(_follow(engine, parsed, FOLLOW_SECONDS, cached, allowed), slots, owner)


def _follow(
    engine: Engine,
    task_id: uuid.UUID,
    lifetime: float,
    cached: TaskRequest | None,
    allowed: Callable[[], bool],
) -> Iterator[bytes]:
    """Each recorded event once (as `status`, with its event id), in order, as it is
    recorded; then `end` after the terminal event, when the lifetime is over, or when the
    key was revoked. A task not yet in Postgres starts with its ACCEPTED event from the
    accepted-task cache."""
    started = time.monotonic()
    sent: set[str] = set()
    quiet_since = started
    yield sse_retry(3000)
    if cached is not None:
        first = accepted_event(cached)
        sent.add(first["event_id"])
        yield sse_event("status", first, event_id=first["event_id"])
    while True:
        try:
            found = load_events(engine, task_id)
        except SQLAlchemyError:
            found = []
            yield sse_event("unavailable", {"message": "the task store cannot be reached"})
        ended = False
        for event in found:
            if event["event_id"] not in sent:
                sent.add(event["event_id"])
                yield sse_event("status", event, event_id=event["event_id"])
                quiet_since = time.monotonic()
            ended = ended or Status(event["status"]).terminal
        if ended:
            yield sse_event("end", {"reason": "terminal"})
            return
        if time.monotonic() - started >= lifetime:
            yield sse_event("end", {"reason": "timeout"})
            return
        if not allowed():
            yield sse_event("end", {"reason": REVOKED})
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            yield sse_comment("keep-alive")
            quiet_since = time.monotonic()
        time.sleep(POLL_SECONDS)
