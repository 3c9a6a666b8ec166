"""Produces task requests and waits for Kafka's acknowledgement (acks=all).

One idempotent producer per process, shared by the request threads; a background
thread serves delivery reports. `submit` returns only once the request is durable in
Kafka, or raises `Unavailable` within the produce timeout, so the API answers 503 fast
and never claims a task it has not stored.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaError, Message, Producer

from app.errors import Unavailable
from core import metrics
from core.kafka import make_producer
from core.settings import Settings

log = logging.getLogger(__name__)


class KafkaSubmitter:
    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.kafka_produce_timeout_seconds
        self.producer: Producer = make_producer(
            settings,
            **{
                "linger.ms": 1,
                "queue.buffering.max.messages": 100_000,
                "queue.buffering.max.kbytes": 256 * 1024,
            },
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def send_many(self, messages: list[tuple[str, bytes, bytes]]) -> list[Future[None]]:
        """Queue (topic, key, value) messages; each future resolves on acknowledgement.
        Raises Unavailable at once when the local queue is full."""
        futures: list[Future[None]] = []
        for topic, key, value in messages:
            future: Future[None] = Future()
            sent = time.perf_counter()

            def on_delivery(
                err: KafkaError | None, _: Message, f: Future[None] = future, t0: float = sent
            ) -> None:
                if err is None:
                    metrics.PRODUCE_LATENCY.observe(time.perf_counter() - t0)
                    f.set_result(None)
                else:
                    f.set_exception(Unavailable(f"Kafka did not take the request: {err.str()}"))

            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
            except BufferError:
                raise Unavailable(
                    "too many requests in flight to Kafka; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            futures.append(future)
        return futures

    def deadline(self) -> float:
        """When a request produced now must have been acknowledged."""
        return time.monotonic() + self.timeout + 1.0

    def wait(self, future: Future[None], deadline: float) -> None:
        try:
            future.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise Unavailable("Kafka did not acknowledge the request in time") from None

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=1)
        left = self.producer.flush(self.timeout)
        if left:
            log.error("%d requests still unacknowledged at shutdown", left)
