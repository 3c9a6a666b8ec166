"""Publishes status events on the status topic (key: task id), without blocking."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core.messages import StatusEvent
from core.settings import Settings

log = logging.getLogger(__name__)


class EventRefused(Exception):
    """This one event cannot be published (it cannot be encoded, it is over the size
    limit, or Kafka refused it); other events may go on. `value` holds its bytes when it
    could be encoded, for the dead-letter topic."""

    def __init__(self, event: StatusEvent, reason: str, value: bytes | None = None) -> None:
        super().__init__(reason)
        self.event = event
        self.reason = reason
        self.value = value


class StatusPublisher:
    """Wraps a producer; `emit` queues an event, `flush` waits for what is queued.

    A failed delivery is logged and counted, never raised: the reconciler notices a
    task whose events went missing, and the outcome kept in Redis lets it re-announce.
    """

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.topic = settings.status_topic
        self.max_bytes = settings.limits.event_max_bytes
        self.failed = 0
        self._lock = threading.Lock()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self.failed += 1
            log.error("status event not delivered: %s", err, extra={"task_id": msg.key()})

    def emit(self, event: StatusEvent) -> None:
        """Queue `event` for Kafka. Raises EventRefused for a fault of this event alone
        (and KafkaException only for a fatal producer error)."""
        try:
            value = event.encode()
        except TypeError as exc:  # orjson.JSONEncodeError: too deep, or not JSON
            raise EventRefused(
                event, f"the {event.status} event cannot be encoded: {exc}"
            ) from None
        if len(value) > self.max_bytes:
            raise EventRefused(
                event,
                f"the {event.status} event is {len(value)} bytes, over the limit of "
                f"{self.max_bytes}",
                value,
            )
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=event.task_id.encode(),
                    value=value,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self.producer.poll(0.1)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise
                raise EventRefused(
                    event, f"Kafka refused the {event.status} event: {error.str()}", value
                ) from None
        self.producer.poll(0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "status %s",
                event.status.value,
                extra={
                    "task_id": event.task_id,
                    "team": event.team,
                    "priority": event.priority,
                    "routine": event.routine,
                    "status": event.status.value,
                    "attempt": event.attempt,
                },
            )

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for queued events; returns how many are still undelivered."""
        return int(self.producer.flush(timeout))
