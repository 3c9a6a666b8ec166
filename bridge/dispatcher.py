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
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis
from celery import Celery
from kombu.exceptions import EncodeError

from bridge.celery_wire import encode_task
from core import redis_keys, redis_scripts
from core.celery_app import task_name
from core.leases import QUEUED_SECONDS, Leases, queued_holder
from core.messages import CeleryEnvelope
from core.outcomes import Outcomes
from core.priority import Priority

log = logging.getLogger(__name__)

WORKER_STALE_SECONDS = 15.0
UNACKED_KEY = "unacked"  # kombu's Redis transport default
FINISHED = "finished"
# One message: is any of its tasks ended (its kept outcome) or this delivery of it sent
# before (its mark)? If none is, push the message. Answers, per task, "" (new), "finished"
# or the queue it was sent to. KEYS: the queue, then per task its outcome key and its
# delivery's mark; ARGV[1]: the message, or "" to check only.
CHECK_AND_PUSH = """
local states = {}
local fresh = true
for i = 2, #KEYS, 2 do
  local state = ''
  if redis.call('EXISTS', KEYS[i]) == 1 then
    state = 'finished'
  else
    state = redis.call('GET', KEYS[i + 1]) or ''
  end
  if state ~= '' then fresh = false end
  states[#states + 1] = state
end
if fresh and ARGV[1] ~= '' then redis.call('LPUSH', KEYS[1], ARGV[1]) end
return states
"""
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


@dataclass
class Sent:
    """What `Dispatcher.send` found and did. `before`, per task: None when it was new (it
    is on its queue now, unless refused), FINISHED when it had ended, otherwise the queue
    an earlier run of the bridge sent this delivery to (a redelivered Kafka message, not
    sent again). `refused`: new tasks whose message cannot be encoded, with the reason.
    `pushed`: how many messages went onto the queues."""

    before: dict[str, str | None] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    pushed: int = 0


class Dispatcher(Protocol):
    """What the bridge needs of a broker: room, sending, claims, and the tasks' kept
    outcomes (core.outcomes)."""

    def capacity(self) -> Capacity: ...

    def kept(self, task_ids: list[str]) -> dict[str, bytes]: ...

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]: ...

    def send(self, messages: list[list[Dispatch]]) -> Sent: ...

    def mark(self, batch: list[Dispatch]) -> None: ...


class CeleryDispatcher:
    def __init__(
        self, celery: Celery, client: redis.Redis, probe: BrokerProbe | None = None
    ) -> None:
        self.celery = celery
        self.redis = client
        self.probe = probe if probe is not None else RedisBrokerProbe(client)
        self.leases = Leases(client)
        self.outcomes = Outcomes(client)
        self._check_and_push = client.register_script(CHECK_AND_PUSH)

    def capacity(self) -> Capacity:
        return self.probe.capacity()

    def kept(self, task_ids: list[str]) -> dict[str, bytes]:
        return self.outcomes.kept(task_ids)

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]:
        return self.outcomes.end(outcomes, seconds)

    def send(self, messages: list[list[Dispatch]]) -> Sent:
        """Put each message (one task, or several of one routine and queue) on its queue,
        unless one of its tasks has ended or this delivery of it was sent before: the check
        and the push are one script per message, all of a step's in one pipelined round
        trip (with send_task the check was a round trip of its own, before kombu's). A
        message with some such tasks goes again with only the others. Raises when the
        broker fails."""
        sent = Sent()
        while messages:
            bodies = [self._encode(message, sent.refused) for message in messages]
            again: list[list[Dispatch]] = []
            for message, body, states in zip(
                messages, bodies, self._check_and_push_all(messages, bodies), strict=True
            ):
                before = [state.decode() or None for state in states]
                sent.before.update(zip((item.task_id for item in message), before, strict=True))
                fresh = [item for item, old in zip(message, before, strict=True) if old is None]
                if not body:  # not sent: refused only if new
                    for item, old in zip(message, before, strict=True):
                        if old is not None:
                            sent.refused.pop(item.task_id, None)
                elif len(fresh) == len(message):
                    sent.pushed += 1
                elif fresh:
                    again.append(fresh)
            messages = again
        return sent

    def _check_and_push_all(self, messages: list[list[Dispatch]], bodies: list[bytes]) -> list[Any]:
        """CHECK_AND_PUSH for each message, in one round trip. Redis unaware of the script
        fails every call, so nothing was pushed before they run again (were its scripts
        flushed between two calls, a message could go twice: the workers' claim makes a
        second delivery harmless)."""

        def fill(pipe: redis.client.Pipeline) -> None:
            for message, body in zip(messages, bodies, strict=True):
                redis_scripts.call(pipe, self._check_and_push, _script_keys(message), [body])

        return redis_scripts.execute(self.redis, fill, [self._check_and_push])

    def _encode(self, message: list[Dispatch], refused: dict[str, str]) -> bytes:
        """The message as the workers' transport reads it; b"" when it cannot be encoded
        (its tasks then in `refused`)."""
        first = message[0]
        args = [item.envelope.to_json() for item in message]
        try:
            return encode_task(
                self.celery,
                task_name(first.envelope.request.routine),
                args,
                # One task: its own id (Flower shows it); several: marked as a batch.
                task_id=first.task_id
                if len(message) == 1
                else f"{first.task_id}+{len(message) - 1}",
                queue=first.queue.value,
                # What Flower shows as the arguments; Celery's own saferepr of them costs
                # more than the rest of the message.
                argsrepr=orjson.dumps(args).decode()[:ARGSREPR_MAX],
            )
        except (EncodeError, TypeError, ValueError, RecursionError) as exc:
            for item in message:
                refused[item.task_id] = f"cannot be put on the Celery queue: {exc}"
            return b""

    def mark(self, batch: list[Dispatch]) -> None:
        """Record deliveries as published, with a queued lease each (unless a worker
        already runs the task). Done after publishing: a bridge that dies in between
        leaves a delivery to be published again (the workers run it once), never one
        marked as sent that was not."""
        if not batch:
            return

        def fill(pipe: redis.client.Pipeline) -> None:
            for item in batch:
                request = item.envelope.request
                pipe.set(
                    redis_keys.dispatched(item.task_id, request.dispatch, request.retries),
                    item.queue.value,
                    ex=redis_keys.KEY_TTL,
                )
                holder = queued_holder(request.dispatch, request.retries)
                self.leases.acquire_in(pipe, item.task_id, holder, QUEUED_SECONDS)

        redis_scripts.execute(self.redis, fill, self.leases.scripts)


def _script_keys(message: list[Dispatch]) -> list[str]:
    """CHECK_AND_PUSH's keys for a message: its queue, then each task's outcome and mark."""
    keys = [message[0].queue.value]
    for item in message:
        request = item.envelope.request
        keys.append(redis_keys.outcome(item.task_id))
        keys.append(redis_keys.dispatched(item.task_id, request.dispatch, request.retries))
    return keys
