"""Puts tasks on the Celery queues, and tells the bridge how much room the workers have.

The bridge sends tasks by name (`routine.<name>`); it never imports the workers' code.
Room is read from the broker itself, behind `BrokerProbe`: for Redis, the tasks waiting in
the priority queues plus those the workers have taken but not yet acknowledged (the
transport's `unacked` hash), set against the worker slots that workers announce in
`tp:workers`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis
from celery import Celery
from kombu.exceptions import EncodeError

from core import redis_keys
from core.celery_app import task_name
from core.leases import QUEUED_SECONDS, Leases, queued_holder
from core.messages import CeleryEnvelope
from core.outcomes import Outcomes
from core.priority import Priority

log = logging.getLogger(__name__)

WORKER_STALE_SECONDS = 15.0
UNACKED_KEY = "unacked"  # kombu's Redis transport default
FINISHED = "finished"
ARGSREPR_MAX = 1024  # Celery's own limit for the argument text in a message's headers


@dataclass(frozen=True)
class Capacity:
    slots: int  # worker processes that can run a task right now, across all workers
    queued: dict[Priority, int]  # tasks waiting in each Celery queue
    reserved: int  # tasks taken by workers and not yet acknowledged

    @property
    def in_flight(self) -> int:
        return sum(self.queued.values()) + self.reserved


@dataclass(frozen=True)
class Dispatch:
    """One task to send, in the envelope a worker reads."""

    envelope: CeleryEnvelope

    @property
    def task_id(self) -> str:
        return self.envelope.request.task_id

    @property
    def queue(self) -> Priority:
        return self.envelope.queue


class BrokerProbe(Protocol):
    """How much room the workers have, read from the broker itself: where another broker
    (RabbitMQ's queue depths and consumer counts, say) plugs in."""

    def capacity(self) -> Capacity: ...


class RedisBrokerProbe:
    """Celery on Redis: the queues' lengths, the transport's `unacked` hash (taken by a
    worker, not yet acknowledged), and the slots workers announce in `tp:workers`."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._slots = 0
        self._slots_read_at = 0.0

    def capacity(self) -> Capacity:
        now = time.monotonic()
        queues = Priority.ordered()
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue.value)
        pipe.hlen(UNACKED_KEY)
        refresh_slots = now - self._slots_read_at > 1.0
        if refresh_slots:
            pipe.hgetall(redis_keys.WORKERS)
        replies = pipe.execute()
        depths, rest = replies[: len(queues)], replies[len(queues) :]
        if refresh_slots:
            self._slots = self._count_slots(rest[1])
            self._slots_read_at = now
        queued = {queue: int(depth) for queue, depth in zip(queues, depths, strict=True)}
        return Capacity(slots=self._slots, queued=queued, reserved=int(rest[0]))

    @staticmethod
    def _count_slots(workers: dict[bytes, bytes]) -> int:
        now = time.time()
        slots = 0
        for value in workers.values():
            try:
                info = orjson.loads(value)
                if now - float(info["at"]) < WORKER_STALE_SECONDS:
                    slots += int(info["slots"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return slots


class Dispatcher(Protocol):
    """What the bridge needs of a broker: room, claims, publishing, and the tasks'
    kept outcomes (core.outcomes)."""

    def capacity(self) -> Capacity: ...

    def kept(self, task_ids: list[str]) -> dict[str, bytes]: ...

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]: ...

    def seen(self, batch: list[Dispatch]) -> list[str | None]: ...

    def mark(self, batch: list[Dispatch]) -> None: ...

    def publish(self, messages: list[list[Dispatch]]) -> dict[str, str]: ...


class CeleryDispatcher:
    def __init__(
        self, celery: Celery, client: redis.Redis, probe: BrokerProbe | None = None
    ) -> None:
        self.celery = celery
        self.redis = client
        self.probe = probe if probe is not None else RedisBrokerProbe(client)
        self.leases = Leases(client)
        self.outcomes = Outcomes(client)

    def capacity(self) -> Capacity:
        return self.probe.capacity()

    def kept(self, task_ids: list[str]) -> dict[str, bytes]:
        return self.outcomes.kept(task_ids)

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]:
        return self.outcomes.end(outcomes, seconds)

    def seen(self, batch: list[Dispatch]) -> list[str | None]:
        """What is known of each delivery: None when it is new and must be published;
        FINISHED when the task already ended; otherwise the queue an earlier run of the
        bridge sent it to (a redelivered Kafka message, not to be sent again)."""
        if not batch:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for item in batch:
            pipe.exists(redis_keys.outcome(item.task_id))
            request = item.envelope.request
            pipe.get(redis_keys.dispatched(item.task_id, request.dispatch, request.retries))
        replies = pipe.execute()
        result: list[str | None] = []
        for finished, previous in zip(replies[0::2], replies[1::2], strict=True):
            if finished:
                result.append(FINISHED)
            else:
                result.append(previous.decode() if previous is not None else None)
        return result

    def mark(self, batch: list[Dispatch]) -> None:
        """Record deliveries as published, with a queued lease each (unless a worker
        already runs the task). Done after publishing: a bridge that dies in between
        leaves a delivery to be published again (the workers run it once), never one
        marked as sent that was not."""
        if not batch:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item in batch:
            request = item.envelope.request
            pipe.set(
                redis_keys.dispatched(item.task_id, request.dispatch, request.retries),
                item.queue.value,
                ex=redis_keys.KEY_TTL,
            )
            self.leases.acquire_in(
                pipe, item.task_id, queued_holder(request.dispatch, request.retries), QUEUED_SECONDS
            )
        pipe.execute()

    def publish(self, messages: list[list[Dispatch]]) -> dict[str, str]:
        """Send each message (one task, or several of one routine and queue) in one
        pipelined round trip (kombu's publish batch). Returns the task ids of messages
        that cannot be encoded, with the reason (they are not sent); raises when the
        broker fails."""
        refused: dict[str, str] = {}
        with self.celery.producer_or_acquire() as producer, producer.batch(max_size=500):
            for message in messages:
                first = message[0]
                args = [item.envelope.to_json() for item in message]
                try:
                    self.celery.send_task(
                        task_name(first.envelope.request.routine),
                        args=args,
                        # What Flower shows as the arguments; Celery's own saferepr of
                        # them costs more than the rest of the publish.
                        argsrepr=orjson.dumps(args).decode()[:ARGSREPR_MAX],
                        # One task: its own id (Flower shows it); several: marked as a batch.
                        task_id=first.task_id
                        if len(message) == 1
                        else f"{first.task_id}+{len(message) - 1}",
                        queue=first.queue.value,
                        producer=producer,
                    )
                except (EncodeError, TypeError, ValueError, RecursionError) as exc:
                    # Encoding happens before the message joins the batch: the rest go on.
                    for item in message:
                        refused[item.task_id] = f"cannot be put on the Celery queue: {exc}"
        return refused
