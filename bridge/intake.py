"""The bridge's intake: one Kafka message becomes a task waiting for dispatch (checked,
routed, announced ACCEPTED), or a dead letter with its reason."""

from __future__ import annotations

import logging
from datetime import datetime

from confluent_kafka import Message

from bridge.announce import Announcer, Pending, PendingTask, Settling
from bridge.scheduler import Waiting
from core.dead_letters import Source, Stopping
from core.messages import MalformedMessage, TaskRequest, decode_request
from core.routing import Route, RoutingError, RoutingPolicy
from core.status_publisher import EventRefused

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        team_by_topic: dict[str, str],
        policy: RoutingPolicy,
        announcer: Announcer,
        *,
        hold_seconds: float,
    ) -> None:
        self.team_by_topic = team_by_topic
        self.policy = policy
        self.announcer = announcer
        self.hold_seconds = hold_seconds

    def take(
        self, message: Message, source: Source, now: float, wall: datetime
    ) -> PendingTask | Settling | None:
        """The message as a task waiting for dispatch (or parked until near its run_at),
        or None once it is dead-lettered (whatever went wrong with it; only Stopping is
        raised). `now` (monotonic) and `wall` are the same moment on the two clocks."""
        request: TaskRequest | None = None
        try:
            request = decode_request(message.value())
            return self._take_in(request, message, source, now, wall)
        except MalformedMessage as exc:
            reason, task_id, team = exc.reason, exc.task_id, exc.team
        except (RoutingError, EventRefused) as exc:
            assert request is not None
            reason, task_id, team = str(exc), request.task_id, request.team
        except Stopping:
            raise
        except Exception as exc:
            # A fault of ours, met on this message: it must not stop every team's tasks.
            task_id = request.task_id if request else None
            team = request.team if request else None
            log.exception("cannot take a request in", extra={"task_id": task_id})
            reason = f"internal error while taking the request in: {exc!r}"
        self.announcer.dead_letter(
            message.value(),
            message.key(),
            source,
            reason,
            task_id=task_id,
            team=team or (self.team_by_topic.get(source.topic) if task_id else None),
            request=request,
        )
        return None

    def _take_in(
        self, request: TaskRequest, message: Message, source: Source, now: float, wall: datetime
    ) -> PendingTask | Settling:
        """Check and route one request and announce it ACCEPTED; raises MalformedMessage,
        RoutingError or EventRefused for a request that must be dead-lettered."""
        if request.team != self.team_by_topic.get(source.topic):
            raise MalformedMessage(
                f"team {request.team!r} does not match topic {source.topic}",
                task_id=request.task_id,
                team=request.team,
            )
        route = self.policy.route(request)
        tp = (source.topic, source.partition)
        if request.is_first_delivery:
            self.announcer.accepted(request, len(message.value() or b""))
            due_in = (request.run_at - wall).total_seconds() if request.run_at else 0.0
            if due_in > 0:
                # Far off: Postgres keeps it (the recorder's releaser sends it back near its
                # time), so this partition's offsets are not held for days.
                parked = due_in > self.hold_seconds
                event = self.announcer.scheduled(request, parked=parked)
                if parked:
                    return Settling(tp, source.offset, event, parked=True)
        return Waiting(
            item=Pending(request, route, tp, source.offset),
            queue=route.queue,
            team=request.team,
            release_at=_release_time(request, route, now, wall),
            partition_key=tp,
        )


def _release_time(request: TaskRequest, route: Route, now: float, wall_now: datetime) -> float:
    """When (on the monotonic clock) the task may be dispatched: now, or the latest of its
    stagger, its retry's backoff and its scheduled run."""
    wall = max(
        (t for t in (route.release_at, request.not_before, request.run_at) if t is not None),
        default=None,
    )
    if wall is None:
        return 0.0
    # Read on both clocks at once: converting with a later wall reading would let a task
    # go before its time by however long the batch took to take in.
    return now + (wall - wall_now).total_seconds()
