"""Publishes status events on the status topic (key: task id), without blocking."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaError, Message, Producer

from core.messages import StatusEvent

log = logging.getLogger(__name__)


class StatusPublisher:
    """Wraps a producer; `emit` queues an event, `flush` waits for what is queued.

    A failed delivery is logged and counted, never raised: the reconciler notices a
    task whose events went missing, and the outcome kept in Redis lets it re-announce.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.failed = 0
        self._lock = threading.Lock()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self.failed += 1
            log.error("status event not delivered: %s", err, extra={"task_id": msg.key()})

    def emit(self, event: StatusEvent) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=event.task_id.encode(),
                    value=event.encode(),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self.producer.poll(0.1)
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
