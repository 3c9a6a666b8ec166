"""The bridge's dispatch: as many waiting tasks as the workers have room for, in the
scheduler's order, onto their Celery queues.

A newcomer whose priority has nothing waiting takes a fast lane (its queue may hold as
many tasks as there are worker slots, so it is next in line when one frees); the rest
wait in the scheduler. Room is read from the broker once per step (bridge.dispatcher).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import redis

from bridge.announce import Announcer, Pending, PendingTask, Settling
from bridge.dispatcher import FINISHED, Capacity, Dispatch, Dispatcher
from bridge.offsets import OffsetTracker
from bridge.scheduler import PriorityScheduler
from core import metrics
from core.dead_letters import Source
from core.messages import CeleryEnvelope, StatusEvent, utcnow
from core.priority import Priority
from core.routing import RoutingPolicy
from core.status import Status

log = logging.getLogger(__name__)


def _same_routine(first: Pending, other: Pending) -> bool:
    return first.request.routine == other.request.routine


@dataclass(kw_only=True)
class Sender:
    dispatcher: Dispatcher
    scheduler: PriorityScheduler[Pending]
    policy: RoutingPolicy
    announcer: Announcer
    offsets: OffsetTracker
    headroom: int | None  # DISPATCH_HEADROOM; None: as many as there are slots
    warn: Callable[[str], None]
    keep_seconds: int  # how long an EXPIRED outcome is kept (core.redis_keys)
    capacity: Capacity | None = field(default=None, init=False)
    fast: list[PendingTask] = field(default_factory=list, init=False)
    _pushed_since_read: int = field(default=0, init=False)
    # Expired here: finished with once Kafka has their EXPIRED events (bridge.service).
    ended: list[Settling] = field(default_factory=list, init=False)

    def read_capacity(self) -> None:
        try:
            self.capacity = capacity = self.dispatcher.capacity()
            self._pushed_since_read = 0
            for queue, depth in capacity.queued.items():
                metrics.QUEUE_DEPTH.labels(queue.value).set(depth)
            metrics.RESERVED.set(capacity.reserved)
            metrics.WORKER_SLOTS.set(capacity.slots)
        except redis.RedisError as exc:
            self.warn(f"cannot read the broker's queues: {exc}")
            self.capacity = None

    def admit(self, waiting: PendingTask, now: float) -> None:
        """A task taken in: straight to the fast lane if it may skip the wait, else to
        the scheduler."""
        if (
            waiting.release_at <= now
            and self.scheduler.waiting(waiting.queue) == 0
            and self._fast_room(waiting.queue) > 0
        ):
            self.fast.append(waiting)
        else:
            self.scheduler.add(waiting, now)

    def _fast_room(self, queue: Priority) -> int:
        """How many newcomers of this priority may skip the wait: the queue may hold as
        many as there are worker slots, so each is next in line when a slot frees."""
        if self.capacity is None:
            return 0
        sent = sum(1 for w in self.fast if w.queue is queue)
        return self.capacity.slots - self.capacity.queued[queue] - sent

    def _window(self, capacity: Capacity) -> int:
        return capacity.slots + (capacity.slots if self.headroom is None else self.headroom)

    def dispatch(self, now: float) -> None:
        self.scheduler.release_due(now)
        messages = [[waiting] for waiting in self.fast]
        self.fast = []
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
                self.warn(f"no worker is running; {self.scheduler.ready_count} tasks wait")
        if messages:
            self._send(messages, now)

    def _fill(self, free: int) -> list[list[PendingTask]]:
        """Up to `free` Celery messages, in the scheduler's order. Consecutive tasks of a
        routine that allows it share a message (up to its `batch`), so tiny tasks do not
        each pay Celery's per-message cost; the order in which tasks start is unchanged."""
        messages: list[list[PendingTask]] = []
        while len(messages) < free:
            upcoming = self.scheduler.peek()
            if upcoming is None:
                break
            spec = self.policy.routines.get(upcoming.item.request.routine)
            limit = spec.batch if spec is not None else 1
            messages.append(self.scheduler.take_like(upcoming, limit, _same_routine))
        return messages

    def _send(self, messages: list[list[PendingTask]], now: float) -> None:
        try:
            messages = self._expire(messages)
        except redis.RedisError as exc:
            self.warn(f"cannot reach Redis to end expired tasks, will retry: {exc}")
            for waiting in (w for message in messages for w in message):
                self.scheduler.add(waiting, now)
            return
        if not messages:
            return
        picked = [waiting for message in messages for waiting in message]
        dispatches = [[_to_dispatch(w.item) for w in message] for message in messages]
        batch = [item for message in dispatches for item in message]
        # Stamped before publishing: a worker may finish a task before this loop emits
        # its QUEUED event, and the timeline must still read QUEUED before STARTED.
        queued_at = utcnow()
        try:
            sent = self.dispatcher.send(dispatches)
        except (redis.RedisError, OSError) as exc:
            self.warn(f"cannot publish to the Celery broker, will retry: {exc}")
            for waiting in picked:
                self.scheduler.add(waiting, now)
            self.capacity = None
            return
        previous = [sent.before[item.task_id] for item in batch]
        refused = sent.refused
        outgoing = [
            item for item, old in zip(batch, previous, strict=True)
            if old is None and item.task_id not in refused
        ]  # fmt: skip
        try:
            self.dispatcher.mark(outgoing)
        except redis.RedisError as exc:
            # Published but not marked: a redelivery would publish again, which the
            # workers' outcome and lease checks make harmless.
            self.warn(f"could not mark dispatched tasks: {exc}")
        self._pushed_since_read += sent.pushed
        ended = [item.task_id for item, old in zip(batch, previous, strict=True) if old == FINISHED]
        self._reannounce(ended)
        for waiting, item, old in zip(picked, batch, previous, strict=True):
            pending = waiting.item
            if old is None and item.task_id in refused:
                self._dead_letter(pending, refused[item.task_id])
                continue
            if old is None:
                metrics.DISPATCHED.labels(item.queue.value, pending.request.team).inc()
                if pending.route.detail and "demoted_from" in pending.route.detail:
                    metrics.DEMOTIONS.labels(
                        pending.request.team, pending.route.detail["demoted_from"]
                    ).inc()
            if old != FINISHED:
                # A duplicate re-announces its QUEUED event (same event id: recorded once).
                queue = item.queue if old is None else Priority(old)
                self.announcer.queued(pending, queue, queued_at)
            self.offsets.done(pending.tp, pending.offset)

    def _expire(self, messages: list[list[PendingTask]]) -> list[list[PendingTask]]:
        """End EXPIRED the tasks whose expires_at has passed (unless they ended already:
        then their outcome is announced again); they are never sent. The rest, as they
        were, without empty messages."""
        moment = utcnow()
        expired = [w for message in messages for w in message if w.item.request.expired(moment)]
        if not expired:
            return messages
        events = {
            w.item.request.task_id: StatusEvent.for_request(
                w.item.request, Status.EXPIRED, detail={"stage": "waiting in the bridge"}
            )
            for w in expired
        }
        before = self.dispatcher.end(
            {task_id: event.encode() for task_id, event in events.items()}, self.keep_seconds
        )
        for waiting in expired:
            pending = waiting.item
            task_id = pending.request.task_id
            if task_id not in before:
                metrics.EXPIRED.labels(pending.request.team, "bridge").inc()
            event = self.announcer.ended(before.get(task_id) or events[task_id])
            if event is None:
                self.offsets.done(pending.tp, pending.offset)  # nothing that can be sent
            else:
                self.ended.append(Settling(pending.tp, pending.offset, event))
        gone = {id(w) for w in expired}
        kept = [[w for w in message if id(w) not in gone] for message in messages]
        return [message for message in kept if message]

    def _reannounce(self, task_ids: list[str]) -> None:
        """Tasks that ended before their dispatch (a cancel, say): their kept outcome is
        announced again, in case whoever ended them could not (same event id: recorded
        once)."""
        if not task_ids:
            return
        try:
            kept = self.dispatcher.kept(task_ids)
        except redis.RedisError as exc:
            self.warn(f"cannot read kept outcomes: {exc}")
            return
        for outcome in kept.values():
            self.announcer.ended(outcome)

    def _dead_letter(self, pending: Pending, reason: str) -> None:
        """Dead-letter a request that was taken in but cannot be dispatched."""
        request = pending.request
        try:
            value = request.encode()
        except TypeError:
            value = orjson.dumps({"task_id": request.task_id, "team": request.team})
        self.announcer.dead_letter(
            value,
            request.task_id.encode(),
            Source(*pending.tp, pending.offset),
            reason,
            task_id=request.task_id,
            team=request.team,
            request=request,
        )
        self.offsets.done(pending.tp, pending.offset)

    def drop(self, keys: set[tuple[str, int]]) -> None:
        """Forget fast-lane tasks of partitions no longer ours."""
        self.fast = [w for w in self.fast if w.partition_key not in keys]


def _to_dispatch(pending: Pending) -> Dispatch:
    return Dispatch(CeleryEnvelope(pending.request, pending.route.queue))
