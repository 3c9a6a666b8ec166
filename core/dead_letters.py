"""The dead-letter topic: where a message that cannot be handled goes, with its reason,
so that the loop that met it goes on.

`DeadLetters.send` waits until Kafka has the dead letter, so a caller may store its
consumer offset right after. A value too large to travel with its headers is cut (header
`truncated_from`); while Kafka is away it waits and tries again, and gives up only when
the process is asked to stop (`Stopping`: the caller keeps its offset, and the message
is read again after a restart).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Producer

from core import metrics
from core.limits import REASON_MAX_CHARS, truncate
from core.settings import Settings

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0
MAX_BACKOFF = 5.0

Headers = list[tuple[str, str | bytes | None]]


class Stopping(Exception):
    """The process is stopping before the dead letter was acknowledged."""


@dataclass(frozen=True)
class Source:
    """Where a dead-lettered message was read."""

    topic: str
    partition: int
    offset: int


class DeadLetters:
    def __init__(
        self,
        producer: Producer,
        settings: Settings,
        *,
        stage: str,
        stop: threading.Event | None = None,
    ) -> None:
        self.producer = producer
        self.topic = settings.dlq_topic
        self.message_max_bytes = settings.kafka_message_max_bytes
        self.stage = stage
        self.stop = stop or threading.Event()

    def send(
        self,
        value: bytes | None,
        *,
        reason: str,
        key: bytes | None = None,
        source: Source | None = None,
        team: str | None = None,
        task_id: str | None = None,
    ) -> None:
        """Put `value` on the dead-letter topic with its reason; return once Kafka has
        acknowledged it. Raises Stopping if the process stops first."""
        reason = truncate(reason, REASON_MAX_CHARS)
        metrics.DEAD_LETTERS.labels(team or "unknown", metrics.reason_class(reason)).inc()
        log.warning(
            "dead-lettering a message%s: %s",
            f" from {source.topic}[{source.partition}]@{source.offset}" if source else "",
            reason,
            extra={"task_id": task_id, "team": team},
        )
        headers: Headers = [
            ("reason", reason.encode()),
            ("stage", self.stage.encode()),
            ("dead_lettered_at", datetime.now(UTC).isoformat().encode()),
        ]
        if source is not None:
            headers += [
                ("source_topic", source.topic.encode()),
                ("source_partition", str(source.partition).encode()),
                ("source_offset", str(source.offset).encode()),
            ]
        if team:
            headers.append(("team", team.encode()))
        if task_id:
            headers.append(("task_id", task_id.encode()))
        value = self._fit(value, key, headers)
        delay = 0.2
        while True:
            error = self._produce_and_wait(key, value, headers)
            if error is None:
                return
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and value:
                value = self._fit(value, key, headers, room=len(value) // 2)
                continue
            log.warning("dead letter not acknowledged (%s); trying again in %.1fs", error, delay)
            if self.stop.wait(delay):
                raise Stopping("stopping before a dead letter was acknowledged")
            delay = min(MAX_BACKOFF, delay * 2)

    def _fit(
        self, value: bytes | None, key: bytes | None, headers: Headers, room: int | None = None
    ) -> bytes | None:
        """`value`, cut so that it travels with its key and headers in one message."""
        if value is None:
            return None
        overhead = len(key or b"") + sum(len(n) + len(v or b"") + 8 for n, v in headers) + 64
        limit = self.message_max_bytes - overhead if room is None else room
        if len(value) <= limit:
            return value
        if not any(name == "truncated_from" for name, _ in headers):
            headers.append(("truncated_from", str(len(value)).encode()))
        return value[: max(0, limit - 32)]

    def _produce_and_wait(
        self, key: bytes | None, value: bytes | None, headers: Headers
    ) -> KafkaError | None:
        reports: list[KafkaError | None] = []
        try:
            self.producer.produce(
                self.topic,
                key=key,
                value=value,
                headers=headers,
                on_delivery=lambda err, _msg: reports.append(err),
            )
        except BufferError:
            self.producer.poll(0.5)
            return KafkaError(KafkaError._QUEUE_FULL, "the producer's queue is full")
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                raise
            return error
        self.producer.flush(FLUSH_SECONDS)
        if not reports:
            return KafkaError(KafkaError._MSG_TIMED_OUT, "not acknowledged in time")
        return reports[0]
