"""`python -m bridge replay`: send dead letters back in, after the cause is fixed.

Reads the dead-letter topic from its start to its current end and, for each dead letter
that matches the filters (team, text in the reason), submits its request again as a new
task (a dead-lettered task stays DEAD_LETTERED: a task never leaves a terminal status).
The new task's id is derived from the dead letter's place in the topic, so replaying the
same dead letter twice still runs it once. A dead letter that is not a readable request
at all (bytes that are not JSON, say) cannot be replayed and is reported as such.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from core.kafka import client_config, make_producer
from core.messages import EVENT_NAMESPACE, MalformedMessage, decode_request, utcnow
from core.settings import Settings


@dataclass
class ReplayReport:
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (old task id, new task id)
    unreadable: Counter[str] = field(default_factory=Counter)  # reason -> count
    filtered_out: int = 0


def _headers(message: Message) -> dict[str, str]:
    result: dict[str, str] = {}
    pairs: list[tuple[str, bytes | str | None]] = list(message.headers() or [])  # type: ignore[arg-type]
    for name, value in pairs:
        if isinstance(value, bytes):
            result[name] = value.decode(errors="replace")
        elif value is not None:
            result[name] = str(value)
    return result


def dead_letters(settings: Settings, *, timeout: float = 10.0) -> list[Message]:
    """Every message on the dead-letter topic, up to its end as of now."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"{settings.consumer_group_prefix}-replay-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        topic = consumer.list_topics(settings.dlq_topic, timeout=timeout).topics[settings.dlq_topic]
        ends: dict[int, int] = {}
        starts = []
        for number in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.dlq_topic, number), timeout=timeout
            )
            if high > low:
                ends[number] = high
                starts.append(TopicPartition(settings.dlq_topic, number, low))
        if not starts:
            return []
        consumer.assign(starts)
        messages: list[Message] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError("the dead-letter topic stopped answering before its end")
            batch = consumer.consume(500, 0.2)
            for message in batch:
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                if offset < ends[partition]:
                    messages.append(message)
                if offset >= ends[partition] - 1:
                    done.add(partition)
        return messages
    finally:
        consumer.close()


def replay(
    settings: Settings,
    *,
    team: str | None = None,
    reason: str | None = None,
    dry_run: bool = False,
    producer: Producer | None = None,
) -> ReplayReport:
    report = ReplayReport()
    if dry_run:
        producer = None
    elif producer is None:
        producer = make_producer(settings)
    for message in dead_letters(settings):
        headers = _headers(message)
        if team is not None and headers.get("team") != team:
            report.filtered_out += 1
            continue
        if reason is not None and reason.lower() not in headers.get("reason", "").lower():
            report.filtered_out += 1
            continue
        try:
            original = decode_request(message.value())
        except MalformedMessage as exc:
            report.unreadable[exc.reason] += 1
            continue
        if original.team not in settings.teams:
            report.unreadable[f"team {original.team!r} is not in TEAMS"] += 1
            continue
        place = f"replay:{message.topic()}:{message.partition()}:{message.offset()}"
        new_id = str(uuid.uuid5(EVENT_NAMESPACE, place))
        # A new task: fresh acceptance, first delivery, no idempotency key of the old one.
        request = original.sent_again(
            task_id=new_id,
            accepted_at=utcnow(),
            idempotency_key=None,
            dispatch=0,
            retries=0,
            not_before=None,
            note=f"replay of dead-lettered task {original.task_id}: {headers.get('reason', '')}",
        )
        if producer is not None:
            try:
                producer.produce(
                    settings.request_topic(request.team),
                    key=new_id.encode(),
                    value=request.encode(),
                )
            except (KafkaException, TypeError) as exc:
                # This one cannot be sent (too large with its note, say); the rest go on.
                report.unreadable[f"Kafka refused it: {exc}"] += 1
                continue
        report.replayed.append((original.task_id, new_id))
    if producer is not None and producer.flush(30):
        raise RuntimeError("Kafka did not acknowledge every replayed request")
    return report
