"""A task's outcome, kept in Redis: the one arbiter of how a task ends.

Whoever ends a task (a worker, a cancel, an expiry, the reconciler parking it) keeps its
terminal event under core.redis_keys.outcome *unless one is kept already* (`SET NX GET`),
then announces it. So a task has one outcome even when a cancel races its own end, and
every stage reads the key before its next step: the bridge before it dispatches, a
worker when it claims a delivery and before it sends a retry.

A worker's outcome carries the STARTED event of the run it ends. A pool process killed
after keeping its outcome loses whatever it had not yet sent, that STARTED event too; the
outcome is announced again later (by the reconciler, the bridge, or the next delivery),
and `replay` announces the STARTED event with it (its id is its own: recorded once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

import orjson
import redis

from core import redis_keys
from core.messages import StatusEvent, decode_event
from core.status import Status


class Outcomes:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def kept(self, task_ids: Iterable[str]) -> dict[str, bytes]:
        """The kept outcome (an encoded terminal event) of each task that has one."""
        ids = list(task_ids)
        if not ids:
            return {}
        values = self.redis.mget([redis_keys.outcome(task_id) for task_id in ids])
        return {
            task_id: value
            for task_id, value in zip(ids, values, strict=True)
            if isinstance(value, bytes)
        }

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]:
        """Keep each task's outcome for `seconds` unless it has one already. Returns the
        outcomes that were there before (those tasks had ended: theirs stands)."""
        if not outcomes:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for task_id, outcome in outcomes.items():
            pipe.set(redis_keys.outcome(task_id), outcome, ex=seconds, nx=True, get=True)
        previous = pipe.execute()
        return {
            task_id: value
            for task_id, value in zip(outcomes, previous, strict=True)
            if isinstance(value, bytes)
        }


def replay(kept: bytes) -> list[StatusEvent]:
    """The events to announce again for a kept outcome: the STARTED event of the run it
    ends, if it carries one, then the outcome. Raises MalformedMessage."""
    outcome = decode_event(kept)
    started = orjson.loads(kept).get("started")  # decode_event has read it: valid JSON
    try:
        at = datetime.fromisoformat(started["at"])
        detail = started.get("detail")
    except (TypeError, KeyError, ValueError):  # none, or unreadable: the outcome stands
        return [outcome]
    if at.tzinfo is None or not (detail is None or isinstance(detail, dict)):
        return [outcome]
    # The run's STARTED event shared everything else with its outcome (tasks.execution).
    run = replace(
        outcome, status=Status.STARTED, at=at, detail=detail, result=None, error=None, event_id=""
    )
    return [run, outcome]
