"""`python -m ops skip-message`: move a consumer past one message that stops it, keeping a
copy of that message in the dead-letter topic (nothing is deleted).

The bridge reads the request topics in the group `<CONSUMER_GROUP_PREFIX>-bridge`, the
recorder the status topic in `<prefix>-recorder`. With BRIDGES=2 (RECORDERS=2) the stack
runs `bridge-1` and `bridge-2` in that one group. A group's committed offset can only be
changed while the group has no members, so every component of the group that runs is
stopped first (by PID), whichever of them was named, and started again afterwards.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from core.kafka import make_admin, make_consumer, make_producer
from core.settings import Settings
from ops import services
from ops.stack import Stack
from ops.supervisor import StartError

COMPONENTS = ("bridge", "recorder")  # or one of several: bridge-1, recorder-2 …
GROUP_EMPTY_TIMEOUT = 60.0  # longer than a consumer's session timeout (10 s), if it was killed
KAFKA_TIMEOUT = 10.0
NO_REASON = "no reason given"

_POSITION = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+):(?P<partition>\d+):(?P<offset>\d+)$")


class Refused(Exception):
    """The request is wrong or unsafe; nothing was changed. The message says why."""


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class Skipped:
    """What skip_message did."""

    group: str
    position: Position
    committed_before: int  # the group's offset for the partition before (-1: none)
    dead_lettered: list[int] = field(default_factory=list)  # source offsets copied


def parse_position(text: str) -> Position:
    """`<topic>:<partition>:<offset>`; raises Refused if it is not that."""
    match = _POSITION.match(text)
    if match is None:
        raise Refused(f"position {text!r} is not <topic>:<partition>:<offset>")
    return Position(match["topic"], int(match["partition"]), int(match["offset"]))


@dataclass(frozen=True)
class Group:
    """A consumer group of the stack."""

    name: str
    topics: list[str]
    members: list[str]  # the stack's components in it: `bridge`, or `bridge-1` … `bridge-N`


def consumer_of(settings: Settings, component: str) -> Group:
    """The consumer group `component` is in. A kind (`bridge`) and each of its components
    (`bridge-2` when BRIDGES=2) name the same group. Raises Refused for an unknown one."""
    prefix = settings.consumer_group_prefix
    groups = {
        "bridge": Group(
            f"{prefix}-bridge",
            list(settings.request_topics),
            services.instance_names("bridge", settings.bridges),
        ),
        "recorder": Group(
            f"{prefix}-recorder",
            [settings.status_topic],
            services.instance_names("recorder", settings.recorders),
        ),
    }
    group = groups.get(services.group_of(component))
    if group is not None and (component in group.members or component in groups):
        return group
    known = sorted({*groups, *(name for g in groups.values() for name in g.members)})
    raise Refused(f"unknown component {component!r}; skip-message knows {', '.join(known)}")


def check_position(settings: Settings, admin: AdminClient, position: Position) -> None:
    """Raises Refused unless the partition exists and the offset holds a message now."""
    topics = admin.list_topics(position.topic, timeout=KAFKA_TIMEOUT).topics
    metadata = topics.get(position.topic)
    if metadata is None or metadata.error is not None:
        raise Refused(f"topic {position.topic!r} does not exist")
    if position.partition not in metadata.partitions:
        raise Refused(
            f"topic {position.topic!r} has no partition {position.partition} "
            f"(it has {len(metadata.partitions)})"
        )
    low, high = _watermarks(settings, position)
    if not low <= position.offset < high:
        raise Refused(
            f"offset {position.offset} is outside {position.topic}[{position.partition}]'s "
            f"messages: {low}..{high - 1}"
            if high > low
            else f"offset {position.offset}: {position.topic}[{position.partition}] is empty"
        )


def committed_offset(admin: AdminClient, group: str, topic: str, partition: int) -> int:
    """The group's committed offset for the partition, or -1 if it has none."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])
    result = admin.list_consumer_group_offsets([request])[group].result(KAFKA_TIMEOUT)
    for tp in result.topic_partitions:
        if tp.error is not None:
            raise KafkaException(tp.error)
        return int(tp.offset) if tp.offset != OFFSET_INVALID else -1
    return -1


def skip_message(
    settings: Settings,
    group: str,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    *,
    skip_earlier: bool = False,
    timeout: float = GROUP_EMPTY_TIMEOUT,
) -> Skipped:
    """Copy the message at `offset` to the dead-letter topic, then set `group`'s committed
    offset for the partition to `offset + 1`.

    The group must be (or become, within `timeout`) empty: stop its consumers first.
    Refused (nothing changed) if the offset holds no message, if the group is already
    past it, or if the group has not finished the messages before it (setting the offset
    would skip those unread) unless `skip_earlier`, which dead-letters those too.
    Raises TimeoutError if the group keeps members, KafkaException if Kafka fails.
    """
    position = Position(topic, partition, offset)
    admin = make_admin(settings)
    check_position(settings, admin, position)
    _wait_empty(admin, group, timeout)
    committed = committed_offset(admin, group, topic, partition)
    low, _ = _watermarks(settings, position)
    first = max(committed, low) if committed >= 0 else low
    _refuse_if_past(group, position, committed)
    if first < offset and not skip_earlier:
        raise Refused(
            f"group {group} has not finished {topic}[{partition}]@{first}..{offset - 1} "
            f"(committed offset {committed if committed >= 0 else 'none'}); moving past "
            f"{offset} would skip those unread. If it stops at {first}, skip that one; "
            "or pass --skip-earlier to dead-letter those as well"
        )
    text = f"skipped by operator: {reason or NO_REASON}"
    messages = _read(settings, position, first)
    teams = {settings.request_topic(team): team for team in settings.teams}
    _dead_letter(settings, messages, text, offset, teams.get(topic))
    _commit(admin, group, TopicPartition(topic, partition, offset + 1), timeout)
    return Skipped(group, position, committed, [m.offset() or 0 for m in messages])


def run(
    settings: Settings,
    stack: Stack,
    component: str,
    position_text: str,
    reason: str,
    *,
    skip_earlier: bool = False,
    timeout: float = GROUP_EMPTY_TIMEOUT,
) -> Skipped:
    """The `skip-message` command: check everything, stop every component of `component`'s
    consumer group that runs, skip, start those again.

    Raises Refused (nothing changed), StartError, or TimeoutError naming the members
    still in the group after `timeout` (consumers this stack does not run: nothing was
    changed, and what was stopped is started again).
    """
    group = consumer_of(settings, component)
    position = parse_position(position_text)
    if position.topic not in group.topics:
        raise Refused(
            f"{component} does not consume {position.topic!r}; "
            f"its topics: {', '.join(group.topics)}"
        )
    admin = make_admin(settings)
    check_position(settings, admin, position)
    committed = committed_offset(admin, group.name, position.topic, position.partition)
    _refuse_if_past(group.name, position, committed)  # committed offsets only grow meanwhile
    running = [name for name in group.members if stack.supervisor.tracked(name) is not None]
    if running:
        if running != [component]:
            print(
                f"  {group.name} must have no members: stopping {', '.join(running)}",
                flush=True,
            )
        stack.stop(running)
    try:
        skipped = skip_message(
            settings,
            group.name,
            position.topic,
            position.partition,
            position.offset,
            reason,
            skip_earlier=skip_earlier,
            timeout=timeout,
        )
    except TimeoutError as exc:
        _start_again(stack, running)
        names = ", ".join(running)
        ours = (
            f"stopped {names} and started {names} again"
            if running
            else f"found none of {', '.join(group.members)} running"
        )
        raise TimeoutError(
            f"{exc}. skip-message {ours}; the members left are consumers this stack does not "
            "run (on another host, or of another run folder): stop them and skip again"
        ) from None
    except BaseException:
        _start_again(stack, running)  # the reason it was not skipped is what to report
        raise
    if running:
        stack.up(running, migrate=False)
    for source in skipped.dead_lettered:
        print(
            f"  copied {position.topic}[{position.partition}]@{source} to {settings.dlq_topic}",
            flush=True,
        )
    before = skipped.committed_before if skipped.committed_before >= 0 else "none"
    print(
        f"  {group.name}: {position.topic}[{position.partition}] committed offset "
        f"{before} -> {position.offset + 1}",
        flush=True,
    )
    idle = [name for name in group.members if name not in running]
    if idle:
        were, them = ("was", "it") if len(idle) == 1 else ("were", "them")
        print(f"  {', '.join(idle)} {were} not running; `make up` starts {them}", flush=True)
    return skipped


def _start_again(stack: Stack, names: list[str]) -> None:
    """Start `names` again after a failed skip; a failure to start is printed, not raised
    (the skip's own error is what to report)."""
    if not names:
        return
    try:
        stack.up(names, migrate=False)
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)


def _refuse_if_past(group: str, position: Position, committed: int) -> None:
    if committed > position.offset:
        raise Refused(
            f"group {group} is already past {position}: its committed offset is {committed}"
        )


def _watermarks(settings: Settings, position: Position) -> tuple[int, int]:
    consumer = make_consumer(settings, f"ops-skip-message-{uuid.uuid4().hex[:8]}")
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(position.topic, position.partition), timeout=KAFKA_TIMEOUT
        )
        return int(low), int(high)
    finally:
        consumer.close()


def _wait_empty(admin: AdminClient, group: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        description = admin.describe_consumer_groups([group])[group].result(KAFKA_TIMEOUT)
        if not description.members:
            return
        if time.monotonic() > deadline:
            members = "; ".join(
                f"client {m.client_id!r} on {m.host.lstrip('/')} (member {m.member_id})"
                for m in description.members
            )
            raise TimeoutError(
                f"group {group} still has {len(description.members)} member(s) after "
                f"{timeout:.0f}s: {members}; stop its consumers first"
            )
        time.sleep(0.5)


def _read(settings: Settings, position: Position, first: int) -> list[Message]:
    """The messages of the partition from `first` to `position.offset`, inclusive."""
    # A group of its own that never commits: reading changes nobody's offsets.
    consumer = make_consumer(
        settings,
        f"ops-skip-message-{uuid.uuid4().hex[:8]}",
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    messages: list[Message] = []
    try:
        consumer.assign([TopicPartition(position.topic, position.partition, first)])
        deadline = time.monotonic() + KAFKA_TIMEOUT
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    break
                raise KafkaException(error)
            messages.append(message)
            if (message.offset() or 0) >= position.offset:
                break
    finally:
        consumer.close()
    if not messages or messages[-1].offset() != position.offset:
        raise Refused(f"no message at {position} could be read")
    return messages


def _dead_letter(
    settings: Settings, messages: list[Message], reason: str, target: int, team: str | None
) -> None:
    """Produce copies to the dead-letter topic (with the bridge's headers, so `bridge
    replay` can select them) and wait until Kafka has them all."""
    producer = make_producer(settings)
    errors: list[str] = []

    def delivered(err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for message in messages:
        why = reason if message.offset() == target else f"{reason} (before offset {target})"
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", why.encode()),
            ("source_topic", (message.topic() or "").encode()),
            ("source_partition", str(message.partition()).encode()),
            ("source_offset", str(message.offset()).encode()),
            ("dead_lettered_at", datetime.now(UTC).isoformat().encode()),
        ]
        if team is not None:
            headers.append(("team", team.encode()))
        producer.produce(
            settings.dlq_topic,
            key=message.key(),
            value=message.value(),
            headers=headers,
            on_delivery=delivered,
        )
        producer.poll(0)
    if producer.flush(30) > 0 or errors:
        raise RuntimeError(f"dead-letter copies not acknowledged by Kafka: {errors}")


def _commit(admin: AdminClient, group: str, offset: TopicPartition, timeout: float) -> None:
    """alter_consumer_group_offsets, retried while a consumer is still leaving the group."""
    deadline = time.monotonic() + timeout
    request = ConsumerGroupTopicPartitions(group, [offset])
    while True:
        try:
            result = admin.alter_consumer_group_offsets([request])[group].result(KAFKA_TIMEOUT)
            for tp in result.topic_partitions:
                if tp.error is not None:
                    raise KafkaException(tp.error)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
