"""No consumer dies on one message. Each loop runs here in-process against the real
Kafka, Redis and Postgres of the running stack, with its own topic or consumer group;
one message is made to fail (a refusal injected into a real producer, or content
Postgres really refuses). The loop goes on, the message is dead-lettered with its
reason, and its task ends DEAD_LETTERED or FAILED with that reason."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from confluent_kafka import Producer
from sqlalchemy import Engine, text

from bridge.dispatcher import CeleryDispatcher
from bridge.replay import replay
from bridge.service import Bridge
from core import redis_keys
from core.celery_app import make_celery
from core.dead_letters import DeadLetters
from core.kafka import ensure_topics, make_consumer, make_producer
from core.messages import CeleryEnvelope, StatusEvent, TaskRequest, utcnow, uuid7_text
from core.priority import Priority
from core.routing import RoutingPolicy
from core.settings import Settings, load_settings
from core.status import Status
from core.status_publisher import StatusPublisher
from recorder.reconciler import Reconciler
from recorder.service import Recorder
from tasks.execution import Resources, Run, load_routine
from tests.dead_letters import DeadLetterWatch, RefusingProducer
from tests.tasks_db import wait_terminal

pytestmark = pytest.mark.stack


@pytest.fixture()
def dead_letters(stack: Settings) -> Iterator[DeadLetterWatch]:
    watch = DeadLetterWatch(stack)
    yield watch
    watch.close()


def _request(team: str, routine: str = "noop", payload: dict | None = None) -> TaskRequest:
    return TaskRequest(
        task_id=uuid7_text(),
        team=team,
        routine=routine,
        priority=Priority.HIGH,
        accepted_at=utcnow(),
        payload=payload,
    )


def _task(engine: Engine, task_id: str) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, error, result FROM tasks WHERE task_id = :id"), {"id": task_id}
        ).one()
    return dict(row._mapping)


class Looping:
    """Runs a loop's `run(stop)` in a thread; tells whether it is still going."""

    def __init__(self, run, *args) -> None:  # type: ignore[no-untyped-def]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run, args=(self.stop, *args), daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_bridge_goes_on_when_a_requests_status_event_is_refused(
    stack: Settings, engine: Engine, dead_letters: DeadLetterWatch
) -> None:
    team = f"t{uuid.uuid4().hex[:12]}"
    settings = load_settings(teams=[team], consumer_group_prefix=f"test-{team}")
    ensure_topics(settings)
    poison, good = _request(team, "echo", {"n": 1}), _request(team)
    producer = RefusingProducer(
        make_producer(settings),
        lambda topic, key, value: (
            topic == settings.status_topic
            and key == poison.task_id.encode()
            and b'"ACCEPTED"' in (value or b"")
        ),
    )
    client = redis.Redis.from_url(settings.redis_url)
    bridge = Bridge(
        settings,
        consumer=make_consumer(settings, f"{settings.consumer_group_prefix}-bridge"),
        producer=producer,  # type: ignore[arg-type]
        dispatcher=CeleryDispatcher(make_celery(settings, "test-bridge"), client),
        policy=RoutingPolicy(settings),
    )
    loop = Looping(bridge.run)
    try:
        sender = make_producer(settings)
        for request in (poison, good):
            sender.produce(
                settings.request_topic(team), key=request.task_id.encode(), value=request.encode()
            )
        assert sender.flush(30) == 0

        ended = wait_terminal(engine, [poison.task_id, good.task_id])

        assert ended == {poison.task_id: "DEAD_LETTERED", good.task_id: "SUCCEEDED"}
        assert (
            "Kafka refused the ACCEPTED event: injected refusal"
            in _task(engine, poison.task_id)["error"]
        )
        headers, value = dead_letters.for_task(poison.task_id)
        assert value == poison.encode()
        assert b"injected refusal" in headers["reason"]
        assert headers["source_topic"] == settings.request_topic(team).encode()
        assert loop.thread.is_alive()
    finally:
        loop.finish()
        client.close()


def test_worker_ends_a_task_failed_when_its_started_event_is_refused(
    stack: Settings, engine: Engine, dead_letters: DeadLetterWatch
) -> None:
    request = _request("alpha", "echo", {"ran": True})
    resources = Resources.build(stack)
    resources.events = StatusPublisher(
        RefusingProducer(  # type: ignore[arg-type]
            resources.producer,
            lambda topic, key, value: (
                key == request.task_id.encode() and b'"STARTED"' in (value or b"")
            ),
        ),
        stack,
    )
    spec = stack.routine_table["echo"]
    envelope = CeleryEnvelope(request, Priority.HIGH)
    try:
        Run(resources, spec, load_routine("echo", spec), envelope).execute()
        kept = resources.redis.get(redis_keys.outcome(request.task_id))
    finally:
        resources.close()

    assert wait_terminal(engine, [request.task_id]) == {request.task_id: "FAILED"}
    task = _task(engine, request.task_id)
    assert (
        task["error"] == "status event refused: Kafka refused the STARTED event: injected refusal"
    )
    assert task["result"] is None  # the routine never ran
    assert kept is not None and b'"FAILED"' in kept  # a redelivery re-announces, never re-runs
    headers, _ = dead_letters.for_task(request.task_id)
    assert headers["stage"] == b"worker"
    assert b"injected refusal" in headers["reason"]


def test_recorder_goes_on_past_a_malformed_event_and_one_postgres_refuses(
    stack: Settings, engine: Engine, dead_letters: DeadLetterWatch
) -> None:
    tag = uuid.uuid4().hex[:12]
    settings = load_settings(
        status_topic=f"tasks.status.test-{tag}", consumer_group_prefix=f"test-{tag}"
    )
    ensure_topics(settings)
    producer = make_producer(settings)
    poison_id, good_id = str(uuid.uuid4()), str(uuid.uuid4())
    malformed = f'{{"task_id": "{poison_id}", "status": "SOMEWHERE"}}'.encode()
    poison = StatusEvent(  # attempt beyond Postgres's integer: refused by the database
        task_id=poison_id, status=Status.STARTED, team="alpha", routine="noop",
        priority="medium", attempt=2**40,
    )  # fmt: skip
    good = StatusEvent(
        task_id=good_id, status=Status.SUCCEEDED, team="alpha", routine="noop", priority="medium"
    )
    recorder = Recorder(
        settings,
        consumer=make_consumer(settings, f"{settings.consumer_group_prefix}-recorder"),
        engine=engine,
        dead_letters=DeadLetters(producer, settings, stage="recorder"),
    )
    loop = Looping(recorder.run)
    try:
        for value in (malformed, poison.encode(), good.encode()):
            producer.produce(settings.status_topic, key=poison_id.encode(), value=value)
        assert producer.flush(30) == 0

        ended = wait_terminal(engine, [poison_id, good_id])

        assert ended == {poison_id: "FAILED", good_id: "SUCCEEDED"}
        error = _task(engine, poison_id)["error"]
        assert error.startswith("STARTED event not recorded: Postgres refused the event")
        assert "out of range" in error
        headers, value = dead_letters.wait(
            lambda h, v: v == malformed, what="the malformed event's dead letter"
        )
        assert headers["reason"].startswith(b"malformed status event: bad status event")
        headers, value = dead_letters.wait(
            lambda h, v: v is not None and b"1099511627776" in v, what="the refused event"
        )
        assert headers["task_id"] == poison_id.encode()
        assert loop.thread.is_alive()
    finally:
        loop.finish()


def test_reconciler_parks_an_outcome_it_cannot_announce_and_goes_on(
    stack: Settings, engine: Engine, dead_letters: DeadLetterWatch
) -> None:
    parked, announced = str(uuid.uuid4()), str(uuid.uuid4())
    client = redis.Redis.from_url(stack.redis_url)
    quiet_since = utcnow() - timedelta(seconds=2)
    with engine.begin() as conn:
        for task_id in (parked, announced):
            conn.execute(
                text(
                    "INSERT INTO tasks (task_id, team, routine, priority, status, progress,"
                    " created_at, updated_at) VALUES (:id, 'alpha', 'noop', 'medium', 'QUEUED',"
                    " 10, :at, :at)"
                ),
                {"id": task_id, "at": quiet_since},
            )
            outcome = StatusEvent(
                task_id=task_id, status=Status.SUCCEEDED, team="alpha", routine="noop",
                priority="medium", attempt=1,
            )  # fmt: skip
            client.set(redis_keys.outcome(task_id), outcome.encode(), ex=600)
    refusing = RefusingProducer(
        make_producer(stack), lambda topic, key, value: key == parked.encode()
    )
    reconciler = Reconciler(
        stack,
        engine=engine,
        client=client,
        producer=refusing,  # type: ignore[arg-type]
        lease_seconds=1,
    )
    try:
        result = reconciler.reconcile()
    finally:
        client.close()

    assert result.parked >= 1 and result.reannounced >= 1
    assert wait_terminal(engine, [parked, announced]) == {parked: "FAILED", announced: "SUCCEEDED"}
    assert _task(engine, parked)["error"].startswith(
        "reconciler: its kept outcome cannot be announced: Kafka refused the SUCCEEDED event"
    )
    headers, _ = dead_letters.for_task(parked)
    assert headers["stage"] == b"reconciler"


def test_replay_goes_on_when_kafka_refuses_one_dead_letter(stack: Settings, engine: Engine) -> None:
    token = f"replay-test-{uuid.uuid4().hex}"
    first, second = _request("alpha"), _request("alpha")
    sending = DeadLetters(make_producer(stack), stack, stage="test")
    for request in (first, second):
        sending.send(request.encode(), reason=token, team="alpha", task_id=request.task_id)
    producer: Producer = make_producer(stack)
    refusing = RefusingProducer(producer, lambda topic, key, value: True)

    report = replay(stack, reason=token, producer=refusing)  # type: ignore[arg-type]

    assert [old for old, _ in report.replayed] == [second.task_id]
    assert sum(report.unreadable.values()) == 1
    assert "Kafka refused it" in next(iter(report.unreadable))
    new_id = report.replayed[0][1]
    assert wait_terminal(engine, [new_id]) == {new_id: "SUCCEEDED"}


def test_dead_letters_cut_a_value_too_large_to_travel_with_its_headers(
    stack: Settings, dead_letters: DeadLetterWatch
) -> None:
    task_id = str(uuid.uuid4())
    value = b"x" * stack.kafka_message_max_bytes
    started = time.monotonic()
    DeadLetters(make_producer(stack), stack, stage="test").send(
        value, reason="too large to keep whole", task_id=task_id
    )
    assert time.monotonic() - started < 60
    headers, kept = dead_letters.for_task(task_id)
    assert headers["truncated_from"] == str(len(value)).encode()
    assert kept is not None and 0 < len(kept) < len(value) and value.startswith(kept)


def test_reconciler_never_dispatches_again_a_task_whose_large_payload_was_not_kept(
    stack: Settings, engine: Engine, dead_letters: DeadLetterWatch
) -> None:
    task_id = str(uuid.uuid4())
    quiet_since = utcnow() - timedelta(seconds=2)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (task_id, team, routine, priority, status, progress,"
                " created_at, updated_at) VALUES (:id, 'alpha', 'echo', 'medium', 'QUEUED',"
                " 10, :at, :at)"
            ),
            {"id": task_id, "at": quiet_since},
        )
        conn.execute(  # accepted without its payload, as the bridge announces a large one
            text(
                "INSERT INTO task_events (event_id, task_id, status, attempt, at, detail)"
                " VALUES (:event, :id, 'ACCEPTED', 0, :at, '{\"request_bytes\": 300000}')"
            ),
            {"event": str(uuid.uuid4()), "id": task_id, "at": quiet_since},
        )
    client = redis.Redis.from_url(stack.redis_url)
    reconciler = Reconciler(
        stack, engine=engine, client=client, producer=make_producer(stack), lease_seconds=1
    )
    try:
        result = reconciler.reconcile()
    finally:
        client.close()

    assert result.parked >= 1
    assert wait_terminal(engine, [task_id]) == {task_id: "FAILED"}
    assert _task(engine, task_id)["error"] == (
        "reconciler: it cannot be dispatched again: its payload, too large for a status "
        "event, was not stored"
    )
    dead_letters.for_task(task_id)
