"""The reconciler's pass with fakes: Postgres answers the stuck-task query with rows the
test gives, Redis is a dictionary of kept outcomes and leases, Kafka a fake producer.
End to end (tests/tasks/test_reliability.py, tests/faults) it finds real lost tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from core import leases, redis_keys
from core.messages import StatusEvent, decode_event, utcnow
from core.settings import Settings
from core.status import Status
from recorder.reconciler import Reconciler
from tests.fakes import FakeEngine, FakeProducer, FakeRedis, unit_settings

ALPHA = "tasks.alpha"
LEASE_SECONDS = 10


@dataclass
class Stuck:
    """A row of the reconciler's query: an unfinished task that has not moved."""

    task_id: uuid.UUID = field(default_factory=uuid.uuid4)
    team: str = "alpha"
    routine: str = "sleep"
    priority: str = "medium"
    created_at: datetime = field(default_factory=lambda: utcnow() - timedelta(minutes=2))
    status: str = "STARTED"
    updated_at: datetime = field(default_factory=lambda: utcnow() - timedelta(minutes=1))
    payload: dict[str, Any] | None = field(default_factory=lambda: {"seconds": 1})
    retries: int = 0
    dispatch: int = 0
    large: bool = False
    idempotency_key: str | None = None
    run_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def id(self) -> str:
        return str(self.task_id)


@dataclass
class Rig:
    settings: Settings
    reconciler: Reconciler
    engine: FakeEngine
    redis: FakeRedis
    producer: FakeProducer

    def stuck(self, *rows: Stuck) -> None:
        self.engine.rows = list(rows)


@pytest.fixture()
def rig() -> Rig:
    settings = unit_settings()
    engine, client, producer = FakeEngine(), FakeRedis(), FakeProducer()
    reconciler = Reconciler(
        settings,
        engine=cast(Any, engine),
        client=cast(Any, client),
        producer=cast(Any, producer),
        lease_seconds=LEASE_SECONDS,
    )
    return Rig(settings, reconciler, engine, client, producer)


def test_the_pass_asks_for_tasks_that_have_not_moved_for_a_lease_period(rig: Rig) -> None:
    rig.reconciler.reconcile()
    [(_, parameters)] = rig.engine.executed
    expected = utcnow() - timedelta(seconds=LEASE_SECONDS)
    assert abs((parameters["before"] - expected).total_seconds()) < 1


def test_a_kept_outcome_is_announced_again_not_dispatched(rig: Rig) -> None:
    row = Stuck()
    ended = StatusEvent(
        task_id=row.id, status=Status.SUCCEEDED, team="alpha", routine="sleep", priority="medium"
    )
    rig.redis.set(redis_keys.outcome(row.id), ended.encode())
    rig.stuck(row)
    result = rig.reconciler.reconcile()

    assert rig.producer.events() == [ended]  # the same event id: recorded once
    assert rig.producer.on(ALPHA) == []
    assert (result.reannounced, result.redispatched) == (1, 0)


def test_a_kept_outcome_is_announced_again_with_the_started_event_of_its_run(rig: Rig) -> None:
    row = Stuck(status="QUEUED")  # the run's STARTED event was lost with its worker
    started = StatusEvent(
        task_id=row.id, status=Status.STARTED, team="alpha", routine="sleep", priority="medium",
        attempt=1, detail={"worker": "worker-1@host", "pid": 4242},
    )  # fmt: skip
    ended = StatusEvent(
        task_id=row.id, status=Status.SUCCEEDED, team="alpha", routine="sleep",
        priority="medium", attempt=1,
    )  # fmt: skip
    rig.redis.set(redis_keys.outcome(row.id), ended.encode(started=started))
    rig.stuck(row)
    result = rig.reconciler.reconcile()

    assert rig.producer.events() == [started, ended]  # in order, their own ids
    assert (result.reannounced, result.redispatched) == (1, 0)


def test_a_task_nothing_holds_is_dispatched_again_as_the_next_dispatch(rig: Rig) -> None:
    row = Stuck(dispatch=1, retries=1)
    rig.stuck(row)
    result = rig.reconciler.reconcile()

    [again] = rig.producer.requests(ALPHA)
    assert (again.task_id, again.dispatch, again.retries) == (row.id, 2, 1)
    assert (again.payload, again.accepted_at) == (row.payload, row.created_at)
    assert (again.note or "").startswith("dispatched again: STARTED for ")
    assert result.redispatched == 1


@pytest.mark.parametrize("holder", ["running:worker-host:4242", "queued:0:0", "retrying"])
def test_a_task_a_live_lease_holds_is_left_alone(rig: Rig, holder: str) -> None:
    row = Stuck()
    rig.redis.set(leases.key(row.id), holder)
    rig.stuck(row)
    result = rig.reconciler.reconcile()

    assert rig.producer.produced == []
    assert (result.examined, result.reannounced, result.redispatched) == (1, 0, 0)


def test_a_task_that_cannot_be_sent_again_is_parked_and_the_pass_goes_on(rig: Rig) -> None:
    first, refused, last = Stuck(), Stuck(), Stuck()
    rig.producer.refuse(lambda m: m.topic() == ALPHA and m.key() == refused.id.encode())
    rig.stuck(first, refused, last)
    result = rig.reconciler.reconcile()

    assert [r.task_id for r in rig.producer.requests(ALPHA)] == [first.id, last.id]
    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert dead.key() == refused.id.encode()
    assert (dead.header("reason") or "").startswith("reconciler: it cannot be dispatched again")
    [failed] = rig.producer.events()
    assert (failed.task_id, failed.status) == (refused.id, Status.FAILED)
    kept = rig.redis.get(redis_keys.outcome(refused.id))
    assert kept is not None and decode_event(kept) == failed
    assert (result.redispatched, result.parked) == (2, 1)


def test_a_lost_task_whose_large_payload_was_not_stored_is_parked(rig: Rig) -> None:
    row = Stuck(payload=None, large=True)
    rig.stuck(row)
    result = rig.reconciler.reconcile()

    assert rig.producer.on(ALPHA) == []
    [failed] = rig.producer.events()
    assert failed.status is Status.FAILED
    assert "was not stored" in (failed.error or "")
    assert result.parked == 1


def test_a_task_just_dispatched_again_waits_before_being_sent_once_more(rig: Rig) -> None:
    row = Stuck()
    rig.stuck(row)
    rig.reconciler.reconcile()
    second = rig.reconciler.reconcile()  # the bridge has not taken it yet: the row is unchanged

    assert len(rig.producer.on(ALPHA)) == 1
    assert (second.examined, second.redispatched) == (1, 0)
