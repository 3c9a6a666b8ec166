"""One delivery of a task on a worker (tasks.execution.Run), with fakes for Redis and
Kafka: what it announces, keeps, retries and dead-letters. The end-to-end tests
(tests/tasks/test_reliability.py, tests/faults) run it inside real Celery workers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from core import leases, redis_keys
from core.dead_letters import DeadLetters
from core.messages import CeleryEnvelope, StatusEvent, TaskRequest, decode_event, utcnow
from core.outcomes import replay
from core.priority import Priority
from core.settings import RoutineSpec, Settings
from core.status import Status
from core.status_publisher import StatusPublisher
from tasks.context import RoutineContext
from tasks.execution import KILL_MARGIN_SECONDS, Resources, Run
from tests.fakes import FakeProducer, FakeRedis, status_is, unit_settings

ALPHA = "tasks.alpha"


class FakeKeeper:
    """Stands in for the LeaseKeeper thread: remembers which leases it would renew."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.running: str | None = None
        self.cancelled: set[str] = set()

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self.cancelled

    def keep(self, task_id: str, holder: str) -> None:
        self.held[task_id] = holder

    def release(self, task_id: str) -> None:
        self.held.pop(task_id, None)


def begin_script(client: FakeRedis) -> Callable[..., list[Any]]:
    """tasks.execution._BEGIN (a Lua script) over the fake Redis: the kept outcome, if
    any; else the running lease unless another running holder has it; else the EXPIRED
    outcome it was given; then the attempt."""

    def begin(*, keys: list[str], args: list[Any]) -> list[Any]:
        outcome_key, lease_key, attempts_key = keys
        holder, _, _, taken_over, expired, _ = args
        outcome = client.get(outcome_key)
        if outcome is not None:
            return [1, outcome]
        current = client.get(lease_key)
        if (
            current is not None
            and current.startswith(b"running:")
            and current != holder.encode()
            and current.decode() != taken_over
        ):
            return [2, current]
        if expired:
            client.set(outcome_key, expired)
            client.delete(lease_key)
            return [3, expired]
        client.set(lease_key, holder)
        return [0, client.incr(attempts_key)]

    return begin


@dataclass
class Worker:
    settings: Settings
    redis: FakeRedis
    producer: FakeProducer
    keeper: FakeKeeper
    resources: Resources
    calls: list[dict[str, Any]]

    def run(
        self,
        function: Callable[..., Any],
        *,
        allowed_retries: int = 2,
        worker: str | None = None,
        killed_at: float | None = None,
        **fields: Any,
    ) -> TaskRequest:
        """Deliver a task of a routine that runs `function` and may be retried
        `allowed_retries` times, on `worker`, to be killed at `killed_at`; `fields` set the
        request's own (task id, retries)."""
        values: dict[str, Any] = {
            "task_id": str(uuid.uuid4()),
            "team": "alpha",
            "routine": "work",
            "priority": Priority.MEDIUM,
            "accepted_at": utcnow(),
            "payload": {"n": 1},
            **fields,
        }
        request = TaskRequest(**values)
        spec = RoutineSpec(function="tests.fakes:unused", retries=allowed_retries)
        envelope = CeleryEnvelope(request, Priority.MEDIUM)
        Run(self.resources, spec, function, envelope, worker=worker, killed_at=killed_at).execute()
        return request

    def statuses(self) -> list[Status]:
        return [event.status for event in self.producer.events()]

    def kept(self, task_id: str) -> StatusEvent | None:
        value = self.redis.get(redis_keys.outcome(task_id))
        return decode_event(value) if value is not None else None


def make_worker(**overrides: Any) -> Worker:
    settings = unit_settings(**overrides)
    client, producer, keeper = FakeRedis(), FakeProducer(), FakeKeeper()
    kafka = cast(Any, producer)  # stands in for confluent_kafka.Producer
    resources = Resources(
        settings=settings,
        redis=cast(Any, client),
        producer=kafka,
        events=StatusPublisher(kafka, settings),
        dead_letters=DeadLetters(kafka, settings, stage="worker"),
        leases=cast(Any, None),  # Run itself never uses it
        keeper=cast(Any, keeper),
        begin_script=begin_script(client),
    )
    return Worker(settings, client, producer, keeper, resources, [])


def test_a_task_that_succeeds_is_kept_and_announced_started_then_succeeded() -> None:
    worker = make_worker()
    task = worker.run(lambda payload: {"doubled": payload["n"] * 2})

    events = worker.producer.events()
    assert [(e.status, e.attempt) for e in events] == [(Status.STARTED, 1), (Status.SUCCEEDED, 1)]
    assert events[1].result == {"doubled": 2}
    assert worker.kept(task.task_id) == events[1]
    assert worker.redis.get(leases.key(task.task_id)) is None
    assert worker.keeper.held == {}


def test_a_kept_outcome_is_announced_again_and_the_routine_not_run() -> None:
    worker = make_worker()
    calls: list[Any] = []
    task_id = str(uuid.uuid4())
    ended = StatusEvent(
        task_id=task_id,
        status=Status.SUCCEEDED,
        team="alpha",
        routine="work",
        priority="medium",
        attempt=1,
        result={"done": True},
    )
    worker.redis.set(redis_keys.outcome(task_id), ended.encode())
    worker.run(calls.append, task_id=task_id)

    assert calls == []
    assert worker.producer.events() == [ended]  # the same event id: recorded once


def test_a_kept_outcome_holds_its_runs_started_event_and_a_new_delivery_replays_both() -> None:
    # A pool process killed after keeping its outcome loses the events it had not sent,
    # its STARTED event too: whoever announces the outcome again announces that as well.
    worker = make_worker()
    task = worker.run(lambda payload: {"done": True}, worker="worker-1@host")
    started, succeeded = worker.producer.events()
    assert replay(worker.redis.get(redis_keys.outcome(task.task_id))) == [started, succeeded]

    worker.producer.produced.clear()  # as if neither had left the killed process
    calls: list[Any] = []
    worker.run(calls.append, task_id=task.task_id)
    assert calls == []
    assert worker.producer.events() == [started, succeeded]  # the same ids: recorded once


def test_a_delivery_another_live_worker_runs_is_left_to_it() -> None:
    worker = make_worker()
    calls: list[Any] = []
    task_id = str(uuid.uuid4())
    worker.redis.set(leases.key(task_id), "running:another-host:4242")
    worker.run(calls.append, task_id=task_id)

    assert calls == []
    assert worker.producer.produced == []


def test_an_attempt_over_the_cap_ends_failed_without_running() -> None:
    worker = make_worker(task_lost_retries=2)
    calls: list[Any] = []
    task_id = str(uuid.uuid4())
    worker.redis.set(redis_keys.attempts(task_id), 3)  # three starts lost with their worker
    worker.run(calls.append, allowed_retries=0, task_id=task_id)  # cap: 0 + 1 + 2

    assert calls == []
    [failed] = worker.producer.events()
    assert failed.status is Status.FAILED
    assert (failed.error or "").startswith("gave up after 3 attempts")
    assert worker.kept(task_id) == failed


def test_a_failure_with_retries_left_is_sent_back_with_not_before_and_announced_retrying() -> None:
    worker = make_worker()

    def fails(payload: dict[str, Any]) -> None:
        raise ValueError("boom")

    before = utcnow()
    task = worker.run(fails, allowed_retries=2)

    [again] = worker.producer.requests(ALPHA)
    assert (again.task_id, again.retries, again.dispatch) == (task.task_id, 1, 0)
    assert again.not_before is not None
    # The first retry's backoff: equal jitter within [0.25, 0.5] s.
    assert before + timedelta(seconds=0.25) <= again.not_before
    assert again.not_before <= utcnow() + timedelta(seconds=0.5)
    assert worker.statuses() == [Status.STARTED, Status.RETRYING]
    assert worker.producer.events()[1].error == "ValueError: boom"
    assert worker.redis.get(leases.key(task.task_id)) == b"retrying"
    assert worker.kept(task.task_id) is None


def test_the_last_allowed_failure_ends_failed_and_is_not_retried() -> None:
    worker = make_worker()

    def fails(payload: dict[str, Any]) -> None:
        raise ValueError("boom")

    task = worker.run(fails, allowed_retries=2, retries=2)

    assert worker.producer.on(ALPHA) == []
    ended = worker.kept(task.task_id)
    assert ended is not None and ended.status is Status.FAILED
    assert ended.error == "ValueError: boom (after 2 retries)"


def test_a_result_over_result_max_bytes_ends_failed_result_too_large() -> None:
    worker = make_worker(result_max_bytes=1024)
    task = worker.run(lambda payload: {"text": "x" * 2000})

    ended = worker.kept(task.task_id)
    assert ended is not None and ended.status is Status.FAILED
    assert (ended.error or "").startswith("result too large")
    assert ended.result is None


def test_a_soft_time_limit_ends_failed_with_the_reason() -> None:
    worker = make_worker()

    def overruns(payload: dict[str, Any]) -> None:
        raise SoftTimeLimitExceeded()

    task = worker.run(overruns)
    ended = worker.kept(task.task_id)
    assert ended is not None and ended.status is Status.FAILED
    assert (ended.error or "").startswith("timed out")


def test_a_refused_started_event_ends_failed_and_is_dead_lettered() -> None:
    worker = make_worker()
    worker.producer.refuse(status_is("STARTED"))
    calls: list[Any] = []
    task = worker.run(calls.append)

    assert calls == []
    [dead] = worker.producer.on(worker.settings.dlq_topic)
    assert decode_event(dead.value()).status is Status.STARTED
    assert "Kafka refused the STARTED event" in (dead.header("reason") or "")
    [failed] = worker.producer.events()
    assert failed.status is Status.FAILED
    assert (failed.error or "").startswith("status event refused")
    assert worker.kept(task.task_id) == failed


def test_a_retry_kafka_refuses_is_dead_lettered_and_the_task_ends_failed() -> None:
    worker = make_worker()
    worker.producer.refuse(lambda message: message.topic() == ALPHA)

    def fails(payload: dict[str, Any]) -> None:
        raise ValueError("boom")

    task = worker.run(fails, allowed_retries=2)

    [dead] = worker.producer.on(worker.settings.dlq_topic)
    assert dead.key() == task.task_id.encode()
    ended = worker.kept(task.task_id)
    assert ended is not None and ended.status is Status.FAILED
    assert "its retry was refused by Kafka" in (ended.error or "")


def test_a_routine_that_asks_for_its_context_gets_the_attempt() -> None:
    worker = make_worker()
    seen: list[RoutineContext] = []

    def with_context(payload: dict[str, Any], context: RoutineContext) -> None:
        seen.append(context)

    task = worker.run(with_context)
    assert seen == [RoutineContext(task.task_id, "alpha", "work", attempt=1)]


def test_the_started_event_names_the_worker_that_runs_the_attempt() -> None:
    worker = make_worker()
    worker.run(lambda payload: None, worker="worker1@host")
    started, ended = worker.producer.events()
    assert started.status is Status.STARTED
    assert started.detail is not None and started.detail["worker"] == "worker1@host"
    assert ended.status is Status.SUCCEEDED and ended.detail is None


def test_a_retry_waits_on_kafka_only_until_short_of_the_hard_time_limit() -> None:
    """Kafka away: the wait for the retry's acknowledgement ends before the pool would
    kill the process (which would lose this attempt's STARTED event and end the task
    FAILED); the run fails instead, its events still queued in the living producer."""
    worker = make_worker()
    waits: list[float | None] = []

    def kafka_away(timeout: float | None = None) -> int:
        waits.append(timeout)
        return 2  # the retry request and the RETRYING event, undelivered

    worker.producer.flush = kafka_away  # type: ignore[method-assign]

    def fails(payload: dict[str, Any]) -> None:
        raise ValueError("boom")

    with pytest.raises(RuntimeError, match="not acknowledged"):
        worker.run(fails, allowed_retries=2, killed_at=time.monotonic() + 3.0)
    [waited] = waits
    assert waited is not None and 0 < waited <= 3.0 - KILL_MARGIN_SECONDS
    assert [m.topic() for m in worker.producer.produced].count(ALPHA) == 1  # queued, not lost
    assert worker.statuses() == [Status.STARTED, Status.RETRYING]


def test_started_names_the_moment_the_process_took_the_task_up_not_the_end_of_its_claim() -> None:
    """As plain Celery's send-to-start ends where the task body begins: the claim's round
    trip to Redis (here a slow one) comes after the moment STARTED names."""
    worker = make_worker()
    claim = worker.resources.begin_script
    claim_began: list[datetime] = []

    def slow_claim(**arguments: Any) -> Any:
        claim_began.append(utcnow())
        time.sleep(0.005)
        return claim(**arguments)

    worker.resources.begin_script = slow_claim
    worker.run(lambda payload: None)
    started, _ = worker.producer.events()
    assert started.status is Status.STARTED
    assert started.at <= claim_began[0]
