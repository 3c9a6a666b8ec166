"""`python -m ops skip-message` on the running stack's Kafka, with topics and a consumer
group of the test's own (the real bridge and recorder are never touched)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import NewTopic

from core.kafka import client_config, make_admin, make_producer
from core.settings import Settings, load_settings
from ops.poison import Refused, committed_offset, run, skip_message
from ops.stack import Stack
from testing.instance import kafka_access
from tests.helpers import wait_for
from tests.instance import Instance
from tests.isolated import ops

pytestmark = pytest.mark.stack


@dataclass
class Scratch:
    settings: Settings
    env: dict[str, str]  # the same configuration for `python -m ops`
    topic: str  # the only request topic: <token>.alpha, two partitions
    group: str  # the bridge's group: <token>-bridge


@pytest.fixture()
def scratch(stack: Settings, tmp_path: Path) -> Iterator[Scratch]:
    token = f"skip_{uuid.uuid4().hex[:8]}"
    config = {
        "REQUEST_TOPIC_PREFIX": f"{token}.",
        "TEAMS": "alpha",
        "STATUS_TOPIC": f"{token}.status",  # never created: the recorder's case refuses
        "DLQ_TOPIC": f"{token}.dlq",
        "CONSUMER_GROUP_PREFIX": token,
        "KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        **kafka_access(stack),  # the stack's tools' principal (its topics are its own)
        "RUN_DIR": str(tmp_path),  # no PID files: nothing here is "running"
    }
    settings = load_settings(**{name.lower(): value for name, value in config.items()})
    admin = make_admin(settings)
    topics = [NewTopic(f"{token}.alpha", 2, 1), NewTopic(settings.dlq_topic, 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result(30)
    group = f"{token}-bridge"
    try:
        yield Scratch(settings, {**os.environ, **config}, f"{token}.alpha", group)
    finally:
        for future in admin.delete_topics([t.topic for t in topics]).values():
            future.result(30)
        groups = admin.list_consumer_groups().result(30).valid
        if any(listing.group_id == group for listing in groups):
            admin.delete_consumer_groups([group])[group].result(30)


def _produce(settings: Settings, topic: str, partition: int, values: list[bytes]) -> None:
    producer = make_producer(settings)
    for index, value in enumerate(values):
        producer.produce(topic, key=f"k{index}".encode(), value=value, partition=partition)
    assert producer.flush(30) == 0


def _commit(settings: Settings, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit as the group's consumer would have, having finished everything before."""
    consumer = Consumer({**client_config(settings), "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    finally:
        consumer.close()


def _dead_letters(settings: Settings, count: int) -> list[Message]:
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(settings.dlq_topic, 0, 0)])
    found: list[Message] = []

    def read_all() -> bool:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            found.append(message)
        return len(found) >= count

    try:
        wait_for(read_all, timeout=30, interval=0, what=f"{count} dead letters")
        _, end = consumer.get_watermark_offsets(TopicPartition(settings.dlq_topic, 0), timeout=10)
        assert end == count  # and no more
    finally:
        consumer.close()
    return found


def _headers(message: Message) -> dict[str, str]:
    headers = message.headers() or []
    assert isinstance(headers, list)  # a consumer's message has them as a list
    return {
        name: value.decode() if isinstance(value, bytes) else (value or "")
        for name, value in headers
    }


def test_skip_message_copies_it_to_the_dlq_and_moves_the_group_past_it(
    scratch: Scratch,
) -> None:
    settings, topic, group = scratch.settings, scratch.topic, scratch.group
    _produce(settings, topic, 0, [b"fine", b"poison", b"after"])
    _commit(settings, group, topic, 0, 1)  # the consumer stops at offset 1

    skipped = skip_message(settings, group, topic, 0, 1, "undecodable")

    assert (skipped.committed_before, skipped.dead_lettered) == (1, [1])
    assert committed_offset(make_admin(settings), group, topic, 0) == 2
    (copy,) = _dead_letters(settings, 1)
    assert (copy.key(), copy.value()) == (b"k1", b"poison")
    headers = _headers(copy)
    assert headers["reason"] == "skipped by operator: undecodable"
    assert (headers["source_topic"], headers["source_partition"]) == (topic, "0")
    assert headers["source_offset"] == "1"
    assert headers["team"] == "alpha"  # what `bridge replay --team` selects by
    assert datetime.fromisoformat(headers["dead_lettered_at"]).tzinfo is not None

    with pytest.raises(Refused, match="already past"):
        skip_message(settings, group, topic, 0, 0, "again")
    assert committed_offset(make_admin(settings), group, topic, 0) == 2


def test_messages_the_group_has_not_finished_are_never_skipped_silently(
    scratch: Scratch,
) -> None:
    settings, topic, group = scratch.settings, scratch.topic, scratch.group
    _produce(settings, topic, 1, [b"a", b"b", b"poison"])  # nothing committed yet

    with pytest.raises(Refused, match=r"has not finished .*@0\.\.1"):
        skip_message(settings, group, topic, 1, 2, "x")
    assert committed_offset(make_admin(settings), group, topic, 1) == -1

    skipped = skip_message(settings, group, topic, 1, 2, "x", skip_earlier=True)
    assert skipped.dead_lettered == [0, 1, 2]
    assert committed_offset(make_admin(settings), group, topic, 1) == 3
    copies = _dead_letters(settings, 3)
    assert [c.value() for c in copies] == [b"a", b"b", b"poison"]
    assert [_headers(c)["reason"] for c in copies] == [
        "skipped by operator: x (before offset 2)",
        "skipped by operator: x (before offset 2)",
        "skipped by operator: x",
    ]


def test_the_command_skips_and_says_what_it_did(scratch: Scratch) -> None:
    _produce(scratch.settings, scratch.topic, 0, [b"poison"])
    result = ops(
        scratch.env, "skip-message", "bridge", f"{scratch.topic}:0:0", "--reason", "bad json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"copied {scratch.topic}[0]@0 to {scratch.settings.dlq_topic}" in result.stdout
    assert f"{scratch.group}: {scratch.topic}[0] committed offset none -> 1" in result.stdout
    assert "bridge was not running" in result.stdout
    (copy,) = _dead_letters(scratch.settings, 1)
    assert _headers(copy)["reason"] == "skipped by operator: bad json"


@pytest.mark.parametrize(
    ("component", "position", "says"),
    [
        ("worker-1", "{topic}:0:0", "unknown component 'worker-1'"),
        ("bridge-1", "{topic}:0:0", "unknown component 'bridge-1'"),  # BRIDGES=1: `bridge`
        ("bridge", "{topic}:zero:0", "is not <topic>:<partition>:<offset>"),
        ("bridge", "{topic}:0", "is not <topic>:<partition>:<offset>"),
        ("bridge", "{status}:0:0", "bridge does not consume"),
        ("recorder", "{topic}:0:0", "recorder does not consume"),
        ("recorder", "{status}:0:0", "does not exist"),
        ("bridge", "{topic}:7:0", "has no partition 7"),
        ("bridge", "{topic}:0:3", "offset 3 is outside"),
        ("bridge", "{topic}:1:0", "is empty"),
    ],
)
def test_the_command_refuses_what_is_wrong_with_exit_2(
    scratch: Scratch, component: str, position: str, says: str
) -> None:
    _produce(scratch.settings, scratch.topic, 0, [b"a", b"b", b"c"])
    where = position.format(topic=scratch.topic, status=scratch.settings.status_topic)
    result = ops(scratch.env, "skip-message", component, where)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    assert result.stderr.startswith("refused: ")
    assert committed_offset(make_admin(scratch.settings), scratch.group, scratch.topic, 0) == -1
    assert _dead_letters(scratch.settings, 0) == []


def test_with_two_bridges_each_names_their_one_group(scratch: Scratch) -> None:
    env = {**scratch.env, "BRIDGES": "2", "RECORDERS": "2"}
    _produce(scratch.settings, scratch.topic, 0, [b"poison"])
    where = f"{scratch.topic}:0:0"

    unknown = ops(env, "skip-message", "bridge-3", where)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert (
        "unknown component 'bridge-3'; skip-message knows "
        "bridge, bridge-1, bridge-2, recorder, recorder-1, recorder-2"
    ) in unknown.stderr
    elsewhere = ops(env, "skip-message", "recorder-2", where)
    assert elsewhere.returncode == 2, elsewhere.stdout + elsewhere.stderr
    assert "recorder-2 does not consume" in elsewhere.stderr

    result = ops(env, "skip-message", "bridge-2", where)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{scratch.group}: {scratch.topic}[0] committed offset none -> 1" in result.stdout
    assert "bridge-1, bridge-2 were not running; `make up` starts them" in result.stdout


def test_a_member_the_stack_does_not_run_is_named_and_nothing_is_skipped(
    scratch: Scratch,
) -> None:
    _produce(scratch.settings, scratch.topic, 0, [b"poison"])
    # A bridge of the same group on another host (or of another run folder).
    foreign = Consumer(
        {
            **client_config(scratch.settings),
            "group.id": scratch.group,
            "client.id": "bridge-elsewhere",
            "enable.auto.commit": False,
        }
    )
    foreign.subscribe([scratch.topic])

    def joined() -> bool:
        foreign.poll(0.2)
        return bool(foreign.assignment())

    try:
        wait_for(joined, what="the other bridge to join the group")
        with pytest.raises(TimeoutError) as caught:
            run(
                scratch.settings,
                Stack(scratch.settings),
                "bridge",
                f"{scratch.topic}:0:0",
                "x",
                timeout=2,
            )
    finally:
        foreign.close()
    message = str(caught.value)
    assert f"group {scratch.group} still has 1 member(s)" in message
    assert "client 'bridge-elsewhere'" in message
    assert "found none of bridge running" in message
    assert "consumers this stack does not run" in message
    assert committed_offset(make_admin(scratch.settings), scratch.group, scratch.topic, 0) == -1
    assert _dead_letters(scratch.settings, 0) == []


@pytest.mark.parametrize(("bridges", "named"), [("1", "bridge"), ("2", "bridge-2")])
def test_running_bridges_are_stopped_moved_past_and_started_again(
    stack: Settings, bridges: str, named: str
) -> None:
    # No worker announces slots here, so the bridge holds the task and commits nothing.
    with Instance(stack, "skipmsg", BRIDGES=bridges).running(["api", "bridge"]) as instance:
        assert instance.settings is not None
        settings = instance.settings
        with instance.client() as client:
            answer = client.post(
                "/api/v1/tasks", json={"team": "alpha", "routine": "noop", "payload": {}}
            )
        assert answer.status_code == 202, answer.text
        topic = settings.request_topic("alpha")
        (partition,) = wait_for(
            lambda: [p for p in range(settings.topic_partitions) if _end(settings, topic, p) == 1],
            what="the request in Kafka",
        )
        members = ["bridge"] if bridges == "1" else ["bridge-1", "bridge-2"]
        before = {name: instance.pid(name) for name in members}

        result = ops(instance.env, "skip-message", named, f"{topic}:{partition}:0")

        assert result.returncode == 0, result.stdout + result.stderr
        group = f"{settings.consumer_group_prefix}-bridge"
        # Every member of the group stops, whichever was named; a lone bridge without a word.
        stopping = f"{group} must have no members: stopping bridge-1, bridge-2"
        assert (stopping in result.stdout) == (bridges == "2"), result.stdout
        for name in members:
            assert f"{name:<10} stopped (pid {before[name]})" in result.stdout
            assert f"{name:<10} started" in result.stdout
            assert instance.pid(name) != before[name]
        assert "not running" not in result.stdout
        assert committed_offset(make_admin(settings), group, topic, partition) == 1
        (copy,) = _dead_letters(settings, 1)
        assert _headers(copy)["reason"] == "skipped by operator: no reason given"


def _end(settings: Settings, topic: str, partition: int) -> int:
    consumer = Consumer({**client_config(settings), "group.id": "ends"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
    finally:
        consumer.close()
