"""How one delivery of a task runs on a worker, whatever the routine.

- An ended task is never run again: its terminal event is kept in Redis, and a second
  delivery (a redelivered message, a reconciler's re-dispatch) re-announces it instead.
- Every start counts as an attempt, including one whose worker died; past the cap
  (retries + 1 + TASK_LOST_RETRIES) the task ends FAILED instead of crash-looping.
- A failure is retried with exponential backoff and equal jitter by sending the request
  back through Kafka with a `not_before` time; the bridge holds it until then (no Celery
  ETA, so no double run past Redis's visibility timeout, celery#2599).
- A soft time limit ends the task FAILED with the reason; a hard one is reported by the
  worker's main process (tasks.worker).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
import redis
from billiard.exceptions import SoftTimeLimitExceeded
from confluent_kafka import KafkaException, Producer

from core import leases, metrics, redis_keys
from core.dead_letters import DeadLetters
from core.leases import RENEW_SECONDS, RUNNING_SECONDS, Leases, running_holder
from core.messages import CeleryEnvelope, MalformedMessage, StatusEvent, decode_event
from core.outcomes import Outcomes, replay
from core.settings import ConfigError, RoutineSpec, Settings
from core.status import Status
from core.status_publisher import EventRefused, StatusPublisher
from tasks.context import RoutineContext

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 0.5
CANCEL_POLL_SECONDS = 0.5
RETRY_MAX_SECONDS = 60.0

Routine = Callable[..., Any]


def load_routine(name: str, spec: RoutineSpec) -> Routine:
    """Import a routine's function; ConfigError names the routine if it cannot."""
    module_name, _, attr = spec.function.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"ROUTINES: routine {name!r}: cannot load {spec.function}: {exc}"
        ) from None
    if not callable(function):
        raise ConfigError(f"ROUTINES: routine {name!r}: {spec.function} is not callable")
    return function


def wants_context(function: Routine) -> bool:
    return "context" in inspect.signature(function).parameters


# How long before the hard time limit a run stops waiting on Kafka (the limit is checked
# by the pool's timer, not to the millisecond).
KILL_MARGIN_SECONDS = 1.0


def retry_delay(retries: int) -> float:
    """Exponential backoff with equal jitter: a random delay between half and all of
    base * 2**retries (capped), so a retry never comes back at once."""
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**retries)
    return random.uniform(ceiling / 2, ceiling)


class TaskCancelled(BaseException):
    """Raised inside a routine whose task was cancelled with terminate, once its grace
    period is over (a BaseException, so a routine's `except Exception` does not eat it)."""


# The task whose routine this process runs right now (None between routines): the one
# thing a terminating cancel may interrupt.
_in_routine: list[str | None] = [None]


def interrupt_running_task(signum: int, frame: Any) -> None:
    """SIGUSR2 handler of a pool process: stop the running routine with TaskCancelled.
    Installed at process start; the lease keeper sends the signal for a terminated task,
    and it is ignored if that routine has returned meanwhile."""
    if _in_routine[0] is not None:
        raise TaskCancelled


class LeaseKeeper:
    """From a thread, every CANCEL_POLL_SECONDS: looks for a cancel of this process's
    running tasks (their kept outcome appears), and every RENEW_SECONDS renews their
    leases, so a long task keeps its lease and a dead worker's lease soon expires.

    A cancel with terminate gives the routine CANCEL_GRACE_SECONDS to return; then the
    routine is interrupted (SIGUSR2 raises TaskCancelled in it), and after as long again
    the process kills itself (the pool starts another; the message is redelivered and
    finds the task ended)."""

    def __init__(self, leases: Leases, grace_seconds: float = 5.0) -> None:
        self.leases = leases
        self.outcomes = Outcomes(leases.redis)
        self.grace = grace_seconds
        self.held: dict[str, str] = {}
        self.running: str | None = None  # the task whose routine runs now, if any
        self.cancelled: dict[str, tuple[float, bool]] = {}  # task -> (seen at, terminate)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interrupted: set[str] = set()

    def keep(self, task_id: str, holder: str) -> None:
        with self._lock:
            self.held[task_id] = holder
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="leases", daemon=True)
                self._thread.start()

    def release(self, task_id: str) -> None:
        with self._lock:
            self.held.pop(task_id, None)
            self.cancelled.pop(task_id, None)
            self._interrupted.discard(task_id)

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self.cancelled

    def _watch(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(CANCEL_POLL_SECONDS):
            with self._lock:
                held = dict(self.held)
            if not held:
                continue
            try:
                self._look_for_cancels(held)
                if time.monotonic() - renewed >= RENEW_SECONDS:
                    self.leases.renew(held)
                    renewed = time.monotonic()
            except redis.RedisError as exc:
                log.warning("could not renew or check %d leases: %s", len(held), exc)
            self._enforce()

    def _look_for_cancels(self, held: dict[str, str]) -> None:
        kept = self.outcomes.kept(t for t in held if t not in self.cancelled)
        now = time.monotonic()
        for task_id, outcome in kept.items():
            try:
                event = decode_event(outcome)
            except MalformedMessage:
                continue
            terminate = bool((event.detail or {}).get("terminate"))
            with self._lock:
                if task_id in self.held:
                    self.cancelled[task_id] = (now, terminate)
            log.info(
                "cancel seen while running%s",
                " (terminate)" if terminate else "",
                extra={"task_id": task_id},
            )

    def _enforce(self) -> None:
        """Terminating cancels past their grace: interrupt, then kill."""
        now = time.monotonic()
        with self._lock:
            due = [
                (task_id, now - seen)
                for task_id, (seen, terminate) in self.cancelled.items()
                if terminate and task_id in self.held
            ]
        for task_id, waited in due:
            if waited >= 2 * self.grace + 1:
                log.warning("killing this process: a cancelled task would not stop")
                os.kill(os.getpid(), signal.SIGKILL)
            interrupt = self.running == task_id and task_id not in self._interrupted
            if waited >= self.grace and interrupt:
                self._interrupted.add(task_id)
                main = threading.main_thread().ident
                if main is not None:
                    signal.pthread_kill(main, signal.SIGUSR2)

    def stop(self) -> None:
        self._stop.set()


# One round trip to begin a run: the kept outcome if the task already ended (or was
# cancelled); else the running lease (unless another live holder has it); else, if the
# task's expires_at has passed (ARGV[5] holds its EXPIRED event), that outcome; else the
# running lease, then the attempt count.
_BEGIN = """
local outcome = redis.call('GET', KEYS[1])
if outcome then return {1, outcome} end
local current = redis.call('GET', KEYS[2])
if current and string.sub(current, 1, 8) == 'running:' and current ~= ARGV[1]
   and ARGV[4] ~= current then
  return {2, current}
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[6])
  redis.call('DEL', KEYS[2])
  return {3, ARGV[5]}
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
local attempt = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {0, attempt}
"""


@dataclass(frozen=True)
class Begun:
    outcome: bytes | None = None  # the task had ended: its terminal event
    held_by: str | None = None  # another live worker runs it
    attempt: int = 0
    expired: bool = False  # `outcome` is the EXPIRED event this claim just kept


@dataclass
class Resources:
    """Per-process clients; built after the worker forks, closed at its exit."""

    settings: Settings
    redis: redis.Redis
    producer: Producer
    events: StatusPublisher
    dead_letters: DeadLetters
    leases: Leases
    keeper: LeaseKeeper
    begin_script: Any

    @classmethod
    def build(cls, settings: Settings) -> Resources:
        from core.kafka import make_producer

        producer = make_producer(settings, **{"message.timeout.ms": 300_000, "linger.ms": 5})
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
        leases = Leases(client)
        return cls(
            settings=settings,
            redis=client,
            producer=producer,
            events=StatusPublisher(producer, settings),
            dead_letters=DeadLetters(producer, settings, stage="worker"),
            leases=leases,
            keeper=LeaseKeeper(leases, settings.cancel_grace_seconds),
            begin_script=client.register_script(_BEGIN),
        )

    def begin(self, task_id: str, holder: str, expired: bytes = b"") -> Begun:
        """Claim a delivery. `expired`: the EXPIRED event to keep if nothing holds the task
        (its expires_at has passed)."""
        keys = [redis_keys.outcome(task_id), leases.key(task_id), redis_keys.attempts(task_id)]
        keep = redis_keys.kept_for_seconds(self.settings.schedule_max_days)
        args: list[Any] = [holder, RUNNING_SECONDS, redis_keys.KEY_TTL, "", expired, keep]
        code, value = self.begin_script(keys=keys, args=args)
        if code == 2 and leases.holder_is_dead(_as_bytes(value).decode()):
            # The holder was a pool process of this host that died: take the task over.
            args[3] = _as_bytes(value).decode()
            code, value = self.begin_script(keys=keys, args=args)
        if code in (1, 3):
            return Begun(outcome=_as_bytes(value), expired=code == 3)
        if code == 2:
            return Begun(held_by=_as_bytes(value).decode())
        return Begun(attempt=int(value))

    def close(self) -> None:
        self.keeper.stop()
        left = self.events.flush(10)
        if left:
            log.error("%d status events undelivered at worker exit", left)
        self.redis.close()


class Run:
    """One delivery of one task to this worker."""

    def __init__(
        self,
        resources: Resources,
        spec: RoutineSpec,
        function: Routine,
        envelope: CeleryEnvelope,
        *,
        worker: str | None = None,
        killed_at: float | None = None,
    ) -> None:
        self.resources = resources
        self.worker = worker  # the Celery worker's name, for the STARTED event
        # time.monotonic() at which the pool kills this process (its hard time limit).
        self.killed_at = killed_at
        self.spec = spec
        self.function = function
        self.envelope = envelope
        self.request = envelope.request
        self.task_id = envelope.request.task_id
        self.attempt = 0
        self.started: StatusEvent | None = None  # this run's STARTED event, once announced
        self.started_at: datetime | None = None

    def labels(self) -> tuple[str, str, str]:
        """(priority, team, routine) for metrics; priority is the queue it ran from."""
        return (self.envelope.queue.value, self.request.team, self.request.routine)

    def _observe_run(self) -> None:
        if self.started_at is not None:
            elapsed = (datetime.now(UTC) - self.started_at).total_seconds()
            metrics.TASK_RUN.labels(*self.labels()).observe(max(0.0, elapsed))

    def event(self, status: Status, **fields: Any) -> StatusEvent:
        return StatusEvent.for_request(
            self.request, status, attempt=self.attempt, queue=self.envelope.queue.value, **fields
        )

    def execute(self) -> None:
        resources = self.resources
        holder = running_holder()
        # When this worker process took the task up: the moment STARTED names (as plain
        # Celery's send-to-start ends at the task body), and the one its expiry is judged
        # at, so a task that passes the check never reads as started after it expired.
        arrived = datetime.now(UTC)
        expired = b""
        if self.request.expired(arrived):
            expired = self.event(Status.EXPIRED, detail={"stage": "claimed by a worker"}).encode()
        begun = resources.begin(self.task_id, holder, expired)
        if begun.expired:
            metrics.EXPIRED.labels(self.request.team, "worker").inc()
        if begun.outcome is not None:
            # Ended already: say so again (the same event ids are recorded once).
            try:
                for event in replay(begun.outcome):
                    self.announce(event)
            except MalformedMessage as exc:
                log.error("unreadable kept outcome: %s", exc, extra={"task_id": self.task_id})
            return
        if begun.held_by is not None:
            # Another live worker runs this task (a duplicate delivery): leave it to it.
            log.info(
                "duplicate delivery skipped; %s runs it",
                begun.held_by,
                extra={"task_id": self.task_id},
            )
            return
        self.attempt = begun.attempt
        resources.keeper.keep(self.task_id, holder)
        try:
            self._attempt(arrived)
        finally:
            resources.keeper.release(self.task_id)

    def _attempt(self, arrived: datetime) -> None:
        settings = self.resources.settings
        cap = self.spec.retries + 1 + settings.task_lost_retries
        if self.attempt > cap:
            self.finish(
                Status.FAILED,
                error=f"gave up after {self.attempt - 1} attempts: the worker running it was "
                f"lost (crashed or killed) {self.attempt - 1 - self.request.retries} "
                f"times",
            )
            return
        # Which worker (and pool process) runs this attempt: the task page's timeline.
        where = {"worker": self.worker, "pid": os.getpid()} if self.worker else None
        started = self.event(Status.STARTED, detail=where, at=arrived)
        if not self.announce(started):
            return
        self.started = started
        self.started_at = started.at
        if self.attempt == 1:
            accepted = self.request.accepted_at
            metrics.TASK_WAIT.labels(*self.labels()).observe(
                max(0.0, (started.at - accepted).total_seconds())
            )
        try:
            result = self.call()
        except TaskCancelled:
            self.finish(Status.FAILED, error="stopped by a cancel (terminate)")
            return
        except SoftTimeLimitExceeded:
            self.finish(
                Status.FAILED, error=f"timed out: ran past its {self.spec.timeout:g}s time limit"
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retries = self.request.retries
            if retries < self.spec.retries:
                self.retry(error, retries)
            else:
                suffix = f" (after {retries} retries)" if retries else ""
                self.finish(Status.FAILED, error=error + suffix)
        else:
            problem = self._result_problem(result)
            if problem is not None:
                self.finish(Status.FAILED, error=problem)
            else:
                self.finish(Status.SUCCEEDED, result=result)

    def _result_problem(self, result: Any) -> str | None:
        """Why the result cannot be kept (not JSON, or over RESULT_MAX_BYTES), or None."""
        try:
            size = len(orjson.dumps(result))
        except TypeError as exc:  # orjson.JSONEncodeError
            return f"the result cannot be stored as JSON: {exc}"
        limit = self.resources.settings.result_max_bytes
        if size > limit:
            return f"result too large ({size} bytes > {limit}, RESULT_MAX_BYTES)"
        return None

    def announce(self, event: StatusEvent) -> bool:
        """Publish `event`. If it is refused (alone: an outage raises instead), it goes to
        the dead-letter topic and the task ends FAILED with the reason; returns False."""
        try:
            self.resources.events.emit(event)
            return True
        except EventRefused as exc:
            refused = exc
        resources = self.resources
        resources.dead_letters.send(
            refused.value,
            reason=refused.reason,
            key=self.task_id.encode(),
            team=event.team,
            task_id=self.task_id,
        )
        ending = event.refused_instead(f"status event refused: {refused.reason}")
        resources.redis.set(
            redis_keys.outcome(self.task_id), ending.encode(), ex=redis_keys.KEY_TTL
        )
        try:
            resources.events.emit(ending)
        except EventRefused as exc:
            log.error("the FAILED event was refused too: %s", exc, extra={"task_id": self.task_id})
        return False

    def call(self) -> Any:
        payload = self.request.payload or {}
        keeper = self.resources.keeper
        keeper.running = _in_routine[0] = self.task_id  # a terminating cancel may interrupt
        try:
            if wants_context(self.function):
                context = RoutineContext(
                    task_id=self.task_id,
                    team=self.request.team,
                    routine=self.request.routine,
                    attempt=self.attempt,
                    is_cancelled=partial(keeper.is_cancelled, self.task_id),
                )
                return self.function(payload, context=context)
            return self.function(payload)
        finally:
            keeper.running = _in_routine[0] = None

    def retry(self, error: str, retries: int) -> None:
        kept = Outcomes(self.resources.redis).kept([self.task_id])
        if kept:  # cancelled while it ran: no further attempt
            self.resources.keeper.release(self.task_id)
            self.resources.redis.delete(leases.key(self.task_id))
            self.announce(decode_event(kept[self.task_id]))
            return
        delay = retry_delay(retries)
        request = self.request.sent_again(
            retries=retries + 1, not_before=datetime.now(UTC) + timedelta(seconds=delay)
        )
        # This run is over: hand the lease on before the retry can reach a worker, or a
        # quick redelivery would find this run's lease and skip itself as a duplicate.
        self.resources.keeper.release(self.task_id)
        self.resources.redis.set(
            leases.key(self.task_id), "retrying", ex=int(delay) + leases.QUEUED_SECONDS
        )
        producer = self.resources.producer
        try:
            producer.produce(
                self.resources.settings.request_topic(request.team),
                key=self.task_id.encode(),
                value=request.encode(),
            )
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            reason = f"its retry was refused by Kafka: {exc.args[0].str()}"
            self.resources.dead_letters.send(
                request.encode(),
                reason=reason,
                key=self.task_id.encode(),
                team=request.team,
                task_id=self.task_id,
            )
            self.finish(Status.FAILED, error=f"{error}; {reason}")
            return
        retrying = self.event(
            Status.RETRYING, error=error, detail={"retry_in_seconds": round(delay, 3)}
        )
        if not self.announce(retrying):
            return
        self._observe_run()
        metrics.TASK_RETRIES.labels(*self.labels()).inc()
        # The retry must be in Kafka before this delivery is acknowledged. Not waited for
        # past the hard time limit: killed, this process would lose what it has not sent
        # (this attempt's STARTED event), and the main process would end the task FAILED.
        # Failing instead keeps the process, whose producer delivers all once Kafka is
        # back; the "retrying" lease lets the reconciler send it again if that is too late.
        if self.resources.events.flush(self._wait_left(30)):
            raise RuntimeError("retry request not acknowledged by Kafka")

    def _wait_left(self, wanted: float) -> float:
        """Seconds this run may block for, at most `wanted`: short of the hard time limit."""
        if self.killed_at is None:
            return wanted
        return max(0.0, min(wanted, self.killed_at - time.monotonic() - KILL_MARGIN_SECONDS))

    def finish(self, status: Status, *, result: Any = None, error: str | None = None) -> None:
        event = self.event(status, result=result, error=error)
        try:
            kept = event.encode(started=self.started)
        except TypeError as exc:  # a result nested too deep to go inside the event
            event = event.refused_instead(f"the {status} event cannot be encoded: {exc}")
            kept = event.encode(started=self.started)
        self.resources.keeper.release(self.task_id)
        # Kept before it is announced: a re-delivery re-announces instead of re-running.
        # Unless an outcome is kept already (a cancel came first): that one stands.
        pipe = self.resources.redis.pipeline(transaction=False)
        pipe.set(redis_keys.outcome(self.task_id), kept, ex=redis_keys.KEY_TTL, nx=True, get=True)
        pipe.delete(leases.key(self.task_id))
        previous, _ = pipe.execute()
        if isinstance(previous, bytes):
            self.announce(decode_event(previous))
            self._observe_run()
            return
        self.announce(event)
        self._observe_run()
        metrics.TASKS_FINISHED.labels(status.value, *self.labels()).inc()
        if status is not Status.SUCCEEDED:
            log.warning(
                "task %s: %s",
                status.value,
                error,
                extra={"task_id": self.task_id, "team": self.request.team, "status": status},
            )


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
