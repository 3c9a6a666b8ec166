"""Tests' view of the dead-letter topic, and a producer that refuses chosen messages
(a real producer underneath: only the refusal is injected)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from core.kafka import client_config
from core.settings import Settings
from tests.helpers import wait_for


class DeadLetterWatch:
    """Reads the dead-letter topic from where it ended when the watch began."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {**client_config(settings), "group.id": f"test-dlq-{uuid.uuid4()}"}
        )
        partition = TopicPartition(settings.dlq_topic, 0)
        _, high = self.consumer.get_watermark_offsets(partition, timeout=10)
        self.consumer.assign([TopicPartition(settings.dlq_topic, 0, high)])
        self.seen: list[tuple[dict[str, bytes], bytes | None]] = []

    def wait(
        self,
        match: Callable[[dict[str, bytes], bytes | None], bool],
        what: str,
        timeout: float = 60,
    ) -> tuple[dict[str, bytes], bytes | None]:
        """The first dead letter (headers, value) since the watch began that `match`es."""

        def found() -> tuple[dict[str, bytes], bytes | None] | None:
            for message in self.consumer.consume(100, 0.2):
                if message.error() is None:
                    self.seen.append((dict(message.headers() or []), message.value()))
            return next((item for item in self.seen if match(*item)), None)

        return wait_for(found, timeout=timeout, what=what)

    def for_task(self, task_id: str, timeout: float = 60) -> tuple[dict[str, bytes], bytes | None]:
        return self.wait(
            lambda headers, _: headers.get("task_id") == task_id.encode(),
            what=f"a dead letter of task {task_id}",
            timeout=timeout,
        )

    def close(self) -> None:
        self.consumer.close()


class RefusingProducer:
    """A real producer that refuses, once, the first message `refuse(topic, key, value)`
    picks, the way librdkafka refuses a message it will not send (KafkaException)."""

    def __init__(
        self, producer: Producer, refuse: Callable[[str, bytes | None, bytes | None], bool]
    ) -> None:
        self.producer = producer
        self.refuse = refuse
        self.refused: list[bytes | None] = []

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        key, value = kwargs.get("key"), kwargs.get("value")
        if not self.refused and self.refuse(topic, key, value):
            self.refused.append(key)
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "injected refusal"))
        self.producer.produce(topic, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)
