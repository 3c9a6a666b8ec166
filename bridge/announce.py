"""What the bridge says about the tasks it handles: their ACCEPTED, QUEUED and
DEAD_LETTERED events, and the dead letters themselves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Producer

from bridge.scheduler import Waiting
from core.dead_letters import DeadLetters, Source
from core.messages import MalformedMessage, StatusEvent, TaskRequest, event_id
from core.outcomes import replay
from core.priority import Priority
from core.routing import Route
from core.settings import Settings
from core.status import Status
from core.status_publisher import EventRefused, StatusPublisher

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A request waiting in the scheduler, with where it came from."""

    request: TaskRequest
    route: Route
    tp: tuple[str, int]
    offset: int


PendingTask = Waiting[Pending]


@dataclass(frozen=True)
class Settling:
    """A message the bridge is finished with once Kafka has `event`, the last thing it
    says about the task (a parked task's SCHEDULED, an EXPIRED it decided): its offset
    is stored only then, so a crash before cannot lose the event."""

    tp: tuple[str, int]
    offset: int
    event: StatusEvent
    parked: bool = False


class Announcer:
    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.events = StatusPublisher(producer, settings)
        self.dead_letters = DeadLetters(producer, settings, stage="bridge")
        self.inline_payload_max_bytes = settings.limits.inline_payload_max_bytes

    def accepted(self, request: TaskRequest, request_bytes: int) -> None:
        """The task's first event. Raises EventRefused (the request is then dead-lettered)."""
        inline = request_bytes <= self.inline_payload_max_bytes
        self.events.emit(
            StatusEvent.for_request(
                request,
                Status.ACCEPTED,
                at=request.accepted_at,
                # A large payload stays out of the event: the API stored it apart.
                payload=request.payload if inline else None,
                detail=None if inline else {"request_bytes": request_bytes},
                idempotency_key=request.idempotency_key,
            )
        )

    def scheduled(self, request: TaskRequest, *, parked: bool) -> StatusEvent:
        """The task waits for its run_at (held here, or parked in Postgres)."""
        event = StatusEvent.for_request(
            request, Status.SCHEDULED, detail={"held_by": "postgres" if parked else "bridge"}
        )
        self.events.emit(event)
        return event

    def ended(self, outcome: StatusEvent | bytes) -> StatusEvent | None:
        """Announce a task's outcome (kept in Redis, or just decided here); returns it,
        or None if it could not be read or sent."""
        try:
            # A kept outcome comes with the STARTED event of the run it ends, if it has one.
            events = [outcome] if isinstance(outcome, StatusEvent) else replay(outcome)
            for event in events:
                self.events.emit(event)
        except (MalformedMessage, EventRefused) as exc:
            log.error("cannot announce a kept outcome: %s", exc)
            return None
        return event

    def queued(self, pending: Pending, queue: Priority, at: datetime) -> None:
        request = pending.request
        event = StatusEvent.for_request(
            request,
            Status.QUEUED,
            at=at,
            attempt=1 + request.retries + request.dispatch,
            queue=queue.value,
            detail=self._queued_detail(pending),
            event_id=event_id(request.task_id, f"QUEUED:{request.dispatch}:{request.retries}"),
        )
        try:
            self.events.emit(event)
        except EventRefused as exc:
            # The task is on its queue already and goes on; only its QUEUED step is missing.
            log.error("QUEUED event refused: %s", exc, extra={"task_id": request.task_id})

    @staticmethod
    def _queued_detail(pending: Pending) -> dict[str, Any] | None:
        detail = dict(pending.route.detail or {})
        request = pending.request
        if request.dispatch:
            detail["dispatch"] = request.dispatch
        if request.note:
            detail["note"] = request.note
        return detail or None

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        reason: str,
        *,
        task_id: str | None,
        team: str | None,
        request: TaskRequest | None = None,
    ) -> None:
        """Put a request on the dead-letter topic (waiting until Kafka has it, so its
        offset may be stored after) and end its task DEAD_LETTERED when it has one."""
        self.dead_letters.send(
            value, reason=reason, key=key, source=source, team=team, task_id=task_id
        )
        if task_id is None:
            return
        if request is not None:
            event = StatusEvent.for_request(request, Status.DEAD_LETTERED, error=reason)
        else:
            event = StatusEvent(
                task_id=task_id,
                status=Status.DEAD_LETTERED,
                team=team or "unknown",
                routine="unknown",
                priority=Priority.MEDIUM.value,
                error=reason,
            )
        try:
            self.events.emit(event)
        except EventRefused as exc:
            log.error("the DEAD_LETTERED event was refused: %s", exc, extra={"task_id": task_id})
