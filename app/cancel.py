"""Cancelling a task: one Redis write decides, whatever stage the task is at.

A task has one outcome key in Redis (core.redis_keys.outcome): a worker sets it when the
task ends, and every stage reads it before the next step (the bridge before it
dispatches, a worker when it claims a delivery and before a retry, the releaser through
Postgres). A cancel sets the key to the CANCELLED event only if no outcome is there yet
(`SET NX`): whichever of the cancel and the task's own end comes first is the task's one
outcome, so a task answered 202 here never ends SUCCEEDED. The event then goes to
`tasks.status`; if that fails after the key is set, the bridge, a worker or the
reconciler announces the kept outcome when they next meet the task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine, select

from app.accepted_cache import AcceptedCache
from app.auth import Principal
from app.errors import Conflict, NotFound, Unavailable
from app.kafka_submitter import KafkaSubmitter
from app.metrics import CANCELS
from app.models import CancelledTask, task_links
from core import leases, redis_keys
from core.db import once_more_if_disconnected
from core.messages import MalformedMessage, StatusEvent, TaskRequest, decode_event
from core.outcomes import Outcomes
from core.schema import REQUEST_COLUMNS, request_of, tasks
from core.settings import Settings
from core.status import Status

# Where the task was, read from the lease that holds it (core.leases).
_STAGE_BY_LEASE = {"running": Status.STARTED, "queued": Status.QUEUED, "retrying": Status.RETRYING}


def stage_of(holder: bytes | None, recorded: Status) -> Status:
    """The task's stage: its lease says it is queued, running or retrying; without one
    it is where Postgres (or the accepted cache) last saw it."""
    if holder is None:
        return recorded
    return _STAGE_BY_LEASE.get(holder.decode().split(":", 1)[0], recorded)


def cancelled_body(event: StatusEvent) -> CancelledTask:
    detail = event.detail or {}
    return {
        "task_id": event.task_id,
        "status": Status.CANCELLED.value,
        "stage": str(detail.get("stage", Status.ACCEPTED.value)),
        "terminate": bool(detail.get("terminate", False)),
        "links": task_links(event.task_id),
    }


@dataclass
class Canceller:
    settings: Settings
    engine: Engine
    client: redis.Redis
    cache: AcceptedCache
    submitter: KafkaSubmitter

    def cancel(self, principal: Principal, task_id: str, *, terminate: bool) -> CancelledTask:
        """Cancel one task of the principal's. Raises NotFound (unknown, or another team's),
        Conflict (ended otherwise: its status in `details`) or Unavailable."""
        try:
            return self._cancel(principal, task_id, terminate=terminate)
        except redis.RedisError as exc:
            raise Unavailable(
                f"cannot reach Redis to cancel the task; retry shortly ({type(exc).__name__})",
                headers={"Retry-After": "1"},
            ) from None

    def _cancel(self, principal: Principal, task_id: str, *, terminate: bool) -> CancelledTask:
        request, recorded = self._find(task_id)
        if request is None or not principal.may_act_for(request.team):
            raise NotFound(f"no task {task_id}")
        outcome_key = redis_keys.outcome(request.task_id)
        if recorded.terminal:
            # A cancelled task's kept outcome (kept longer than any task waits) lets a
            # repeat answer as the first did, stage and all, once it is recorded too.
            kept_cancel = self.client.get(outcome_key) if recorded is Status.CANCELLED else None
            return self._already_ended(
                request.task_id, recorded, kept_cancel if isinstance(kept_cancel, bytes) else None
            )
        pipe = self.client.pipeline(transaction=False)
        pipe.get(outcome_key)
        pipe.get(leases.key(request.task_id))
        kept, holder = pipe.execute()
        if kept is not None:
            answer = self._already_ended(request.task_id, recorded, kept)
            # Cancelled, not yet recorded: the first cancel's event may not have reached
            # Kafka; say it again (the same event id is recorded once).
            self._publish(request.task_id, kept)
            return answer
        detail: dict[str, Any] = {
            "stage": stage_of(holder, recorded).value,
            "terminate": terminate,
            "cancelled_by": f"key {principal.key_id}",
        }
        event = StatusEvent.for_request(request, Status.CANCELLED, detail=detail)
        encoded = event.encode()
        seconds = redis_keys.kept_for_seconds(self.settings.schedule_max_days)
        previous = Outcomes(self.client).end({request.task_id: encoded}, seconds)
        if previous:  # it ended (or was cancelled) a moment ago
            return self._already_ended(request.task_id, recorded, previous[request.task_id])
        # If this fails the cancel still holds (the key is set; whoever meets the task next
        # announces it), but the client is told its CANCELLED step is not recorded yet.
        self._publish(request.task_id, encoded)
        CANCELS.labels(request.team, detail["stage"]).inc()
        return cancelled_body(event)

    def _publish(self, task_id: str, event: bytes) -> None:
        """Put the CANCELLED event on the status topic; raises the API error if Kafka
        does not acknowledge it in time."""
        (error,) = self.submitter.send(
            [(self.settings.status_topic, task_id.encode(), event)], hand_on=False
        )
        if error is not None:
            raise error

    def _already_ended(self, task_id: str, recorded: Status, kept: bytes | None) -> CancelledTask:
        """A repeat of a cancel answers as the first did; any other end is a conflict."""
        event: StatusEvent | None = None
        if kept is not None:
            try:
                event = decode_event(kept)
            except MalformedMessage:
                event = None
        status = event.status if event is not None else recorded
        if event is not None and status is Status.CANCELLED:
            return cancelled_body(event)
        if event is None and status is Status.CANCELLED:
            return {
                "task_id": task_id,
                "status": status.value,
                "stage": status.value,
                "terminate": False,
                "links": task_links(task_id),
            }
        raise Conflict(
            f"task {task_id} has already ended {status.value}: there is nothing to cancel",
            details={"status": status.value},
        )

    def _find(self, task_id: str) -> tuple[TaskRequest | None, Status]:
        """The task as a request (who it belongs to, what it runs) and its recorded status."""
        try:
            parsed = uuid.UUID(task_id)
        except ValueError:
            raise NotFound(f"no task {task_id!r}: task ids are UUIDs") from None

        def read() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(*REQUEST_COLUMNS, tasks.c.status).where(tasks.c.task_id == parsed)
                ).first()

        row = once_more_if_disconnected(read)
        if row is not None:
            return request_of(row), Status(row.status)
        cached = self.cache.requests([str(parsed)]).get(str(parsed))
        return cached, Status.ACCEPTED
