"""The bridge: a Kafka consumer group that turns task requests into Celery tasks.

Each request is checked and routed (core.routing), waits in the priority scheduler
until the workers have room, and is then published to its Celery queue. Offsets are
stored only once a message is dispatched, dead-lettered or found to be a duplicate,
so a crash re-reads what was not finished (at-least-once); a per-delivery mark in
Redis, set once a task is published, makes the re-read harmless. A message that cannot
become a task goes to the dead-letter topic with its reason and original bytes, and the
loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from celery.exceptions import CeleryError
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from kombu.exceptions import KombuError

from bridge.dispatcher import FINISHED, Capacity, CeleryDispatcher, Dispatch
from bridge.offsets import OffsetTracker
from bridge.scheduler import PriorityScheduler, Waiting
from core import metrics
from core.dead_letters import DeadLetters, Source, Stopping
from core.messages import (
    MalformedMessage,
    StatusEvent,
    TaskRequest,
    decode_request,
    event_id,
    utcnow,
)
from core.priority import Priority
from core.routing import Route, RoutingError, RoutingPolicy
from core.settings import Settings
from core.status import Status
from core.status_publisher import EventRefused, StatusPublisher

log = logging.getLogger(__name__)

BATCH = 500
IDLE_POLL = 0.1
BUSY_POLL = 0.002


@dataclass
class Pending:
    """A request waiting in the scheduler, with where it came from."""

    request: TaskRequest
    route: Route
    tp: tuple[str, int]
    offset: int


def record_consumer_lag(stats_json: str) -> None:
    """librdkafka's statistics callback: publish each partition's consumer lag."""
    try:
        stats = orjson.loads(stats_json)
        for topic, info in stats.get("topics", {}).items():
            for partition, numbers in info.get("partitions", {}).items():
                lag = numbers.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    metrics.CONSUMER_LAG.labels(topic, partition).set(lag)
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        log.debug("unreadable consumer statistics: %s", exc)


def _same_routine(first: Pending, other: Pending) -> bool:
    return first.request.routine == other.request.routine


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        producer: Producer,
        dispatcher: CeleryDispatcher,
        policy: RoutingPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.events = StatusPublisher(producer, settings)
        self.dead_letters = DeadLetters(producer, settings, stage="bridge")
        self.dispatcher = dispatcher
        self.policy = policy
        self.clock = clock
        self.scheduler: PriorityScheduler[Pending] = PriorityScheduler(settings.priority_weights)
        self.offsets = OffsetTracker()
        self.team_by_topic = {settings.request_topic(t): t for t in settings.teams}
        self.paused = False
        self.capacity: Capacity | None = None
        self._pushed_since_read = 0
        self._fast: list[Waiting[Pending]] = []
        self._last_warning = 0.0

    # The loop.

    def run(self, stop: threading.Event, ready_file: Path | None = None) -> None:
        self.consumer.subscribe(
            list(self.team_by_topic),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.dead_letters.stop = stop
        log.info("bridge consuming %s", ", ".join(self.team_by_topic))
        if ready_file is not None:
            ready_file.touch()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self._shutdown()

    def step(self) -> None:
        messages = self._read()
        now = self.clock()
        self._read_capacity()
        for message in messages:
            self._intake(message, now)
        self._dispatch(now)
        self._store_offsets()
        self.producer.poll(0)
        self._flow_control()

    def _read(self) -> list[Message]:
        """What is there now, or else wait (up to the poll timeout) for the first
        message: `consume` alone would wait for a full batch or the whole timeout."""
        messages = self.consumer.consume(BATCH, 0)
        if messages:
            return messages
        first = self.consumer.poll(self._poll_timeout())
        if first is None:
            return []
        return [first, *self.consumer.consume(BATCH - 1, 0)]

    def _poll_timeout(self) -> float:
        if self.scheduler.ready_count:
            return BUSY_POLL
        release = self.scheduler.next_release()
        if release is not None:
            return max(0.0, min(IDLE_POLL, release - self.clock()))
        return IDLE_POLL

    # Intake: check, route, dead-letter or schedule.

    def _intake(self, message: Message, now: float) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        tp = (topic, partition)
        self.offsets.seen(tp, offset)
        request: TaskRequest | None = None
        try:
            request = decode_request(message.value())
            waiting = self._take_in(request, message, tp, offset, now)
        except MalformedMessage as exc:
            self._dead_letter_message(message, exc.reason, exc.task_id, exc.team)
        except (RoutingError, EventRefused) as exc:
            assert request is not None
            self._dead_letter_message(message, str(exc), request.task_id, request.team, request)
        except Stopping:
            raise
        except Exception as exc:
            # A fault of ours, met on this message: it must not stop every team's tasks.
            log.exception(
                "cannot take a request in", extra={"task_id": getattr(request, "task_id", None)}
            )
            self._dead_letter_message(
                message,
                f"internal error while taking the request in: {exc!r}",
                request.task_id if request else None,
                request.team if request else None,
                request,
            )
        else:
            if (
                waiting.release_at <= now
                and self.scheduler.waiting(waiting.queue) == 0
                and self._fast_room(waiting.queue) > 0
            ):
                self._fast.append(waiting)
            else:
                self.scheduler.add(waiting, now)
            return
        self.offsets.done(tp, offset)

    def _take_in(
        self, request: TaskRequest, message: Message, tp: tuple[str, int], offset: int, now: float
    ) -> Waiting[Pending]:
        """Check and route one request and announce it ACCEPTED; raises MalformedMessage,
        RoutingError or EventRefused for a request that must be dead-lettered."""
        expected_team = self.team_by_topic.get(tp[0])
        if request.team != expected_team:
            raise MalformedMessage(
                f"team {request.team!r} does not match topic {tp[0]}",
                task_id=request.task_id,
                team=request.team,
            )
        route = self.policy.route(
            task_id=request.task_id,
            team=request.team,
            routine=request.routine,
            priority=request.priority,
            accepted_at=request.accepted_at,
            count_flood=request.is_first_delivery,
        )
        if request.is_first_delivery:
            size = len(message.value() or b"")
            inline = size <= self.settings.limits.inline_payload_max_bytes
            self.events.emit(
                StatusEvent(
                    task_id=request.task_id,
                    status=Status.ACCEPTED,
                    team=request.team,
                    routine=request.routine,
                    priority=request.priority.value,
                    at=request.accepted_at,
                    accepted_at=request.accepted_at,
                    # A large payload stays out of the event: the API stored it apart.
                    payload=request.payload if inline else None,
                    detail=None if inline else {"request_bytes": size},
                    idempotency_key=request.idempotency_key,
                )
            )
        return Waiting(
            item=Pending(request, route, tp, offset),
            queue=route.queue,
            team=request.team,
            release_at=self._release_time(request, route, now),
            partition_key=tp,
        )

    def _release_time(self, request: TaskRequest, route: Route, now: float) -> float:
        wall = max(
            (t for t in (route.release_at, request.not_before) if t is not None),
            default=None,
        )
        if wall is None:
            return 0.0
        return now + (wall - datetime.now(UTC)).total_seconds()

    # Dispatch: as much as the workers have room for, in scheduler order.

    def _window(self, capacity: Capacity) -> int:
        headroom = self.settings.dispatch_headroom
        return capacity.slots + (capacity.slots if headroom is None else headroom)

    def _read_capacity(self) -> None:
        try:
            self.capacity = capacity = self.dispatcher.capacity()
            self._pushed_since_read = 0
            for queue, depth in capacity.queued.items():
                metrics.QUEUE_DEPTH.labels(queue.value).set(depth)
            metrics.RESERVED.set(capacity.reserved)
            metrics.WORKER_SLOTS.set(capacity.slots)
        except redis.RedisError as exc:
            self._warn(f"cannot read the broker's queues: {exc}")
            self.capacity = None

    def _fast_room(self, queue: Priority) -> int:
        """How many newcomers of this priority may skip the wait: the queue may hold as
        many as there are worker slots, so each is next in line when a slot frees."""
        if self.capacity is None:
            return 0
        sent = sum(1 for w in self._fast if w.queue is queue)
        return self.capacity.slots - self.capacity.queued[queue] - sent

    def _dispatch(self, now: float) -> None:
        self.scheduler.release_due(now)
        messages = [[waiting] for waiting in self._fast]
        self._fast = []
        if self.capacity is not None:
            free = (
                self._window(self.capacity)
                - self.capacity.in_flight
                - self._pushed_since_read
                - len(messages)
            )
            if free > 0:
                messages.extend(self._fill(free))
            elif self.capacity.slots == 0 and self.scheduler.ready_count:
                self._warn(f"no worker is running; {self.scheduler.ready_count} tasks wait")
        if messages:
            self._send(messages, now)

    def _fill(self, free: int) -> list[list[Waiting[Pending]]]:
        """Up to `free` Celery messages, in the scheduler's order. Consecutive tasks of a
        routine that allows it share a message (up to its `batch`), so tiny tasks do not
        each pay Celery's per-message cost; the order in which tasks start is unchanged."""
        messages: list[list[Waiting[Pending]]] = []
        while len(messages) < free:
            upcoming = self.scheduler.peek()
            if upcoming is None:
                break
            spec = self.policy.routines.get(upcoming.item.request.routine)
            limit = spec.batch if spec is not None else 1
            messages.append(self.scheduler.take_like(upcoming, limit, _same_routine))
        return messages

    def _send(self, messages: list[list[Waiting[Pending]]], now: float) -> None:
        picked = [waiting for message in messages for waiting in message]
        batch = [self._to_dispatch(w.item) for w in picked]
        # Stamped before publishing: a worker may finish a task before this loop emits
        # its QUEUED event, and the timeline must still read QUEUED before STARTED.
        queued_at = utcnow()
        try:
            previous = self.dispatcher.seen(batch)
            claimed = iter(zip(batch, previous, strict=True))
            outgoing = []
            for message in messages:
                parts = [next(claimed) for _ in message]
                fresh = [item for item, old in parts if old is None]
                if fresh:
                    outgoing.append(fresh)
            refused = self.dispatcher.publish(outgoing)
        except (redis.RedisError, KombuError, CeleryError, OSError) as exc:
            self._warn(f"cannot publish to the Celery broker, will retry: {exc}")
            for waiting in picked:
                self.scheduler.add(waiting, now)
            self.capacity = None
            return
        try:
            self.dispatcher.mark(
                [item for message in outgoing for item in message if item.task_id not in refused]
            )
        except redis.RedisError as exc:
            # Published but not marked: a redelivery would publish again, which the
            # workers' outcome and lease checks make harmless.
            self._warn(f"could not mark dispatched tasks: {exc}")
        self._pushed_since_read += len(outgoing)
        for waiting, item, old in zip(picked, batch, previous, strict=True):
            pending = waiting.item
            if old is None and item.task_id in refused:
                self._dead_letter_pending(pending, refused[item.task_id])
                continue
            if old is None:
                metrics.DISPATCHED.labels(item.queue.value, pending.request.team).inc()
                if pending.route.detail and "demoted_from" in pending.route.detail:
                    metrics.DEMOTIONS.labels(
                        pending.request.team, pending.route.detail["demoted_from"]
                    ).inc()
            if old != FINISHED:
                # A duplicate re-announces its QUEUED event (same event id: recorded once).
                self._emit_queued(pending, item.queue if old is None else Priority(old), queued_at)
            self.offsets.done(pending.tp, pending.offset)

    def _to_dispatch(self, pending: Pending) -> Dispatch:
        request = pending.request
        envelope = {
            "task_id": request.task_id,
            "team": request.team,
            "routine": request.routine,
            "priority": request.priority.value,
            "queue": pending.route.queue.value,
            "payload": request.payload,
            "accepted_at": request.accepted_at.isoformat(),
            "dispatch": request.dispatch,
            "retries": request.retries,
        }
        return Dispatch(
            task_id=request.task_id,
            routine=request.routine,
            queue=pending.route.queue,
            envelope=envelope,
            dispatch=request.dispatch,
            retries=request.retries,
        )

    def _dead_letter_pending(self, pending: Pending, reason: str) -> None:
        """Dead-letter a request that was taken in but cannot be dispatched."""
        request = pending.request
        try:
            value = request.encode()
        except TypeError:
            value = orjson.dumps({"task_id": request.task_id, "team": request.team})
        source = Source(*pending.tp, pending.offset)
        self._dead_letter(
            value, request.task_id.encode(), source, reason, request.task_id, request.team, request
        )
        self.offsets.done(pending.tp, pending.offset)

    def _emit_queued(self, pending: Pending, queue: Priority, at: datetime) -> None:
        request = pending.request
        try:
            self._announce_queued(pending, queue, at)
        except EventRefused as exc:
            # The task is on its queue already and goes on; only its QUEUED step is missing.
            log.error("QUEUED event refused: %s", exc, extra={"task_id": request.task_id})

    def _announce_queued(self, pending: Pending, queue: Priority, at: datetime) -> None:
        request = pending.request
        self.events.emit(
            StatusEvent(
                task_id=request.task_id,
                status=Status.QUEUED,
                at=at,
                team=request.team,
                routine=request.routine,
                priority=request.priority.value,
                attempt=1 + request.retries + request.dispatch,
                queue=queue.value,
                detail=self._queued_detail(pending),
                accepted_at=request.accepted_at,
                event_id=event_id(request.task_id, f"QUEUED:{request.dispatch}:{request.retries}"),
            )
        )

    @staticmethod
    def _queued_detail(pending: Pending) -> dict[str, Any] | None:
        detail = dict(pending.route.detail or {})
        request = pending.request
        if request.dispatch:
            detail["dispatch"] = request.dispatch
        if request.note:
            detail["note"] = request.note
        return detail or None

    # Dead letters.

    def _dead_letter_message(
        self,
        message: Message,
        reason: str,
        task_id: str | None,
        team: str | None,
        request: TaskRequest | None = None,
    ) -> None:
        source = Source(message.topic() or "", message.partition() or 0, message.offset() or 0)
        team = team or (self.team_by_topic.get(source.topic) if task_id else None)
        self._dead_letter(message.value(), message.key(), source, reason, task_id, team, request)

    def _dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        reason: str,
        task_id: str | None,
        team: str | None,
        request: TaskRequest | None,
    ) -> None:
        """Put a request on the dead-letter topic (waiting until Kafka has it, so its
        offset may be stored after) and end its task DEAD_LETTERED when it has one."""
        self.dead_letters.send(
            value, reason=reason, key=key, source=source, team=team, task_id=task_id
        )
        if task_id is None:
            return
        event = StatusEvent(
            task_id=task_id,
            status=Status.DEAD_LETTERED,
            team=team or "unknown",
            routine=request.routine if request else "unknown",
            priority=request.priority.value if request else Priority.MEDIUM.value,
            error=reason,
            accepted_at=request.accepted_at if request else None,
        )
        try:
            self.events.emit(event)
        except EventRefused as exc:
            log.error("the DEAD_LETTERED event was refused: %s", exc, extra={"task_id": task_id})

    # Offsets, flow control, rebalances.

    def _store_offsets(self) -> None:
        committable = self.offsets.committable()
        if not committable:
            return
        try:
            self.consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in committable.items()]
            )
        except Exception as exc:  # a partition revoked a moment ago
            log.debug("store_offsets: %s", exc)

    def _flow_control(self) -> None:
        for queue in Priority.ordered():
            metrics.WAITING.labels(queue.value).set(self.scheduler.waiting(queue))
        waiting = len(self.scheduler)
        limit = self.settings.bridge_max_waiting
        if not self.paused and waiting >= limit:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            log.info("pausing intake: %d tasks wait for workers", waiting)
        elif self.paused and waiting < limit // 2:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
            log.info("resuming intake: %d tasks wait", waiting)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        dropped = self.scheduler.drop(keys)
        self._fast = [w for w in self._fast if w.partition_key not in set(keys)]
        committable = self.offsets.committable()
        mine = [
            TopicPartition(t, p, committable[(t, p)]) for (t, p) in keys if (t, p) in committable
        ]
        if mine:
            try:
                consumer.commit(offsets=mine, asynchronous=False)
            except Exception as exc:
                log.info("commit on revoke: %s", exc)
        self.offsets.forget(keys)
        log.info("revoked %d partitions; %d waiting tasks handed over", len(keys), len(dropped))

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 5:
            log.warning(text)
            self._last_warning = now

    def _shutdown(self) -> None:
        log.info(
            "bridge stopping; %d waiting tasks are left to the next owner", len(self.scheduler)
        )
        self._store_offsets()
        undelivered = self.events.flush(10)
        if undelivered:
            log.error("%d status events were not delivered before shutdown", undelivered)
        self.consumer.close()
