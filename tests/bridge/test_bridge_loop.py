"""The bridge's loop with fakes: offsets, dead letters, the fast lane, flow control,
shares by weight, rebalances and broker outages, one `step()` at a time.

The end-to-end tests (tests/bridge/test_poison.py, tests/pipeline) run the same loop
against the real stack; these check each rule alone, on a clock the test moves.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pytest
import redis
from confluent_kafka import TopicPartition

from bridge.service import Bridge
from core.messages import StatusEvent, TaskRequest, utcnow
from core.priority import Priority
from core.routing import RoutingPolicy
from core.settings import Settings
from core.status import Status
from tests.fakes import (
    FakeClock,
    FakeConsumer,
    FakeDispatcher,
    FakeProducer,
    status_is,
    unit_settings,
)

H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW
ALPHA = "tasks.alpha"


@dataclass
class Rig:
    settings: Settings
    bridge: Bridge
    consumer: FakeConsumer
    producer: FakeProducer
    dispatcher: FakeDispatcher
    clock: FakeClock

    def send(self, request: TaskRequest, *, partition: int = 0) -> None:
        """Put a request on its team's topic, as the API does."""
        topic = self.settings.request_topic(request.team)
        self.consumer.queue(
            topic, request.encode(), key=request.task_id.encode(), partition=partition
        )

    def stored(self, partition: int = 0) -> int | None:
        return self.consumer.stored.get((ALPHA, partition))


def make_rig(slots: int = 0, *, reserved: int = 0, **overrides: Any) -> Rig:
    # No headroom: the window of tasks on the Celery queues is exactly the worker slots.
    settings = unit_settings(**{"dispatch_headroom": 0, **overrides})
    clock = FakeClock()
    consumer, producer = FakeConsumer(), FakeProducer()
    dispatcher = FakeDispatcher(slots, reserved=reserved)
    bridge = Bridge(
        settings,
        # The fakes stand in for confluent_kafka's clients and the Celery dispatcher.
        consumer=cast(Any, consumer),
        producer=cast(Any, producer),
        dispatcher=cast(Any, dispatcher),
        policy=RoutingPolicy(settings, clock=clock),
        clock=clock,
    )
    return Rig(settings, bridge, consumer, producer, dispatcher, clock)


def request(priority: Priority = M, **fields: Any) -> TaskRequest:
    return TaskRequest(
        task_id=str(uuid.uuid4()),
        team="alpha",
        routine="sleep",  # batch 1: one task per Celery message
        priority=priority,
        accepted_at=utcnow(),
        payload={"seconds": 0},
        **fields,
    )


def test_an_offset_is_stored_only_once_its_message_is_dispatched() -> None:
    rig = make_rig(slots=0)
    task = request()
    rig.send(task)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []
    assert rig.stored() == 0  # a restart reads the waiting task again

    rig.dispatcher.slots = 1
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [task.task_id]
    assert rig.stored() == 1


def test_a_malformed_message_is_dead_lettered_and_the_next_one_still_dispatched() -> None:
    rig = make_rig(slots=2)
    rig.consumer.queue(ALPHA, b"{not json")
    task = request()
    rig.send(task)
    rig.bridge.step()

    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert dead.value() == b"{not json"
    assert (dead.header("reason") or "").startswith("not JSON")
    assert dead.header("source_offset") == "0"
    assert rig.dispatcher.published_ids == [task.task_id]
    assert rig.stored() == 2


def test_a_refused_accepted_event_dead_letters_the_request() -> None:
    rig = make_rig(slots=2)
    rig.producer.refuse(status_is("ACCEPTED"))
    task = request()
    rig.send(task)
    rig.bridge.step()

    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert dead.key() == task.task_id.encode()
    assert "Kafka refused the ACCEPTED event" in (dead.header("reason") or "")
    assert [(e.task_id, e.status) for e in rig.producer.events()] == [
        (task.task_id, Status.DEAD_LETTERED)
    ]
    assert rig.dispatcher.published_ids == []
    assert rig.stored() == 1


def test_a_newcomer_whose_priority_has_nothing_waiting_takes_the_fast_lane() -> None:
    # Both slots busy and no headroom: no room in the window, but the queue is empty.
    rig = make_rig(slots=2, reserved=2)
    task = request(H)
    rig.send(task)
    rig.bridge.step()
    assert rig.dispatcher.published_to(H) == [task.task_id]


def test_a_task_that_ends_the_wait_is_sent_on_the_room_read_before_it() -> None:
    """The workers' room is read while the bridge would wait anyway: the task that wakes
    it goes out with no round trip to the broker between its arrival and its publish."""
    rig = make_rig(slots=1)
    calls: list[str] = []
    read_room, send, poll = rig.dispatcher.capacity, rig.dispatcher.send, rig.consumer.poll
    task = request()

    def capacity() -> Any:
        calls.append("room")
        return read_room()

    def arrives(timeout: float | None = None) -> Any:
        calls.append("wait")
        rig.send(task)  # the request comes in while the bridge waits
        return poll(timeout)

    def published(messages: Any) -> Any:
        calls.append("publish")
        return send(messages)

    rig.dispatcher.capacity = capacity  # type: ignore[method-assign]
    rig.dispatcher.send = published  # type: ignore[method-assign]
    rig.consumer.poll = arrives  # type: ignore[method-assign]
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [task.task_id]
    assert calls == ["room", "wait", "publish"]


def test_a_newcomer_waits_behind_tasks_of_its_priority_when_there_is_no_room() -> None:
    rig = make_rig(slots=0)
    first = request(M)
    rig.send(first)
    rig.bridge.step()  # no workers: it waits in the scheduler

    rig.dispatcher.slots, rig.dispatcher.reserved = 2, 2  # workers, all busy
    second = request(M)
    rig.send(second)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []
    assert rig.bridge.scheduler.waiting(M) == 2


def test_intake_pauses_past_bridge_max_waiting_and_resumes_below_half() -> None:
    rig = make_rig(slots=0, bridge_max_waiting=100)
    rig.consumer.assign([TopicPartition(ALPHA, 0)])
    for _ in range(100):
        rig.send(request())
    rig.bridge.step()
    assert rig.consumer.paused == {(ALPHA, 0)}

    rig.dispatcher.slots = 30
    rig.bridge.step()  # 70 wait: over half the limit, still paused
    assert len(rig.bridge.scheduler) == 70
    assert rig.consumer.paused == {(ALPHA, 0)}

    rig.dispatcher.workers_took_everything()
    rig.bridge.step()  # 40 wait: below half
    assert len(rig.bridge.scheduler) == 40
    assert rig.consumer.paused == set()
    assert (rig.consumer.pauses, rig.consumer.resumes) == (1, 1)


def test_ten_free_slots_are_shared_by_weight_while_every_priority_waits() -> None:
    rig = make_rig(slots=0)  # weights 6/3/1 by default
    for _ in range(20):
        for priority in (L, M, H):
            rig.send(request(priority))
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []

    rig.dispatcher.slots = 10
    rig.bridge.step()
    shares = Counter(message[0].queue for message in rig.dispatcher.published)
    assert shares == {H: 6, M: 3, L: 1}


def test_a_revoked_partitions_waiting_tasks_are_dropped_and_handed_over() -> None:
    rig = make_rig(slots=0)
    mine, theirs = request(), request()
    rig.send(theirs, partition=0)
    rig.send(mine, partition=1)
    rig.bridge.step()

    # What librdkafka calls (Bridge.run registers it with subscribe) when partition 0 goes.
    rig.bridge._on_revoke(cast(Any, rig.consumer), [TopicPartition(ALPHA, 0)])
    assert rig.consumer.committed == {(ALPHA, 0): 0}  # the next owner starts at the task

    rig.dispatcher.slots = 2
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [mine.task_id]


def test_a_redelivered_message_already_on_its_queue_is_announced_not_published() -> None:
    rig = make_rig(slots=2)
    task = request()
    rig.dispatcher.delivered[(task.task_id, 0, 0)] = M.value  # an earlier bridge sent it
    rig.send(task)
    rig.bridge.step()

    assert rig.dispatcher.published_ids == []
    assert Status.QUEUED in [e.status for e in rig.producer.events()]
    assert rig.stored() == 1


def test_a_task_celery_cannot_encode_is_dead_lettered_and_the_rest_published() -> None:
    rig = make_rig(slots=4)
    bad, good = request(), request()
    rig.dispatcher.refuse[bad.task_id] = "cannot be put on the Celery queue: too deep"
    rig.send(bad)
    rig.send(good)
    rig.bridge.step()

    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert dead.key() == bad.task_id.encode()
    assert rig.dispatcher.published_ids == [good.task_id]
    ended = [e.task_id for e in rig.producer.events() if e.status is Status.DEAD_LETTERED]
    assert ended == [bad.task_id]
    assert rig.stored() == 2


def test_while_the_broker_is_away_tasks_wait_and_go_once_it_is_back() -> None:
    rig = make_rig(slots=2)
    rig.dispatcher.failure = redis.ConnectionError("connection refused")
    task = request()
    rig.send(task)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []
    assert rig.stored() == 0

    rig.dispatcher.failure = None
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [task.task_id]
    assert rig.stored() == 1


def test_a_retry_is_held_on_the_bridge_clock_until_its_not_before() -> None:
    rig = make_rig(slots=2)
    task = request(retries=1, not_before=utcnow() + timedelta(seconds=5))
    rig.send(task)
    rig.bridge.step()
    rig.clock.advance(4)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []

    rig.clock.advance(2)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [task.task_id]


@pytest.mark.timeout(10)
def test_run_reads_every_team_topic_and_at_stop_stores_offsets_and_closes() -> None:
    rig = make_rig(slots=2)
    task = request()
    rig.send(task)
    stop = threading.Event()
    rig.consumer.stop_when_idle = stop
    rig.bridge.run(stop)

    assert rig.consumer.subscription == ["tasks.alpha", "tasks.bravo"]
    assert rig.dispatcher.published_ids == [task.task_id]
    assert rig.stored() == 1
    assert rig.consumer.closed


# The task lifecycle: scheduled runs, expiry, cancels.


def test_a_task_scheduled_within_the_hold_window_is_held_until_its_run_at() -> None:
    rig = make_rig(slots=2, schedule_hold_seconds=60)
    task = request(run_at=utcnow() + timedelta(seconds=5))
    rig.send(task)
    rig.bridge.step()
    assert [e.status for e in rig.producer.events()] == [Status.ACCEPTED, Status.SCHEDULED]
    assert rig.producer.events()[1].detail == {"held_by": "bridge"}
    rig.clock.advance(4)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []
    assert rig.stored() == 0  # held: a restart reads it again

    rig.clock.advance(2)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [task.task_id]
    assert rig.stored() == 1


def test_a_task_scheduled_beyond_the_hold_window_is_parked_once_its_event_is_durable() -> None:
    rig = make_rig(slots=2, schedule_hold_seconds=60)
    task = request(run_at=utcnow() + timedelta(hours=2))
    rig.send(task)
    rig.bridge.step()
    scheduled = rig.producer.events()[-1]
    assert (scheduled.status, scheduled.detail) == (Status.SCHEDULED, {"held_by": "postgres"})
    assert scheduled.run_at == task.run_at
    assert rig.dispatcher.published_ids == []
    assert rig.stored() == 1  # Postgres keeps it from here (the recorder's releaser)
    assert len(rig.bridge.scheduler) == 0


def test_a_released_task_is_held_until_its_time_and_never_parked_again() -> None:
    rig = make_rig(slots=2, schedule_hold_seconds=60)
    task = request(run_at=utcnow() + timedelta(hours=2), released=True)
    rig.send(task)
    rig.bridge.step()
    assert rig.producer.events() == []  # ACCEPTED and SCHEDULED were said before parking
    assert rig.stored() == 0 and len(rig.bridge.scheduler) == 1


def test_an_expired_task_ends_expired_and_is_never_dispatched() -> None:
    rig = make_rig(slots=2)
    task = request(expires_at=utcnow() - timedelta(seconds=1))
    fresh = request()
    rig.send(task)
    rig.send(fresh)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == [fresh.task_id]
    expired = [e for e in rig.producer.events() if e.status is Status.EXPIRED]
    assert [e.task_id for e in expired] == [task.task_id]
    assert rig.dispatcher.outcomes[task.task_id] == expired[0].encode()  # kept: one outcome
    assert rig.stored() == 2


def test_a_cancelled_task_is_not_dispatched_and_its_kept_outcome_is_announced() -> None:
    rig = make_rig(slots=2)
    task = request()
    cancelled = StatusEvent.for_request(task, Status.CANCELLED, detail={"stage": "ACCEPTED"})
    rig.dispatcher.outcomes[task.task_id] = cancelled.encode()
    rig.send(task)
    rig.bridge.step()
    assert rig.dispatcher.published_ids == []
    assert [e.event_id for e in rig.producer.events() if e.status is Status.CANCELLED] == [
        cancelled.event_id
    ]
    assert rig.stored() == 1
