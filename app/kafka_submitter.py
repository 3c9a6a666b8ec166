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
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from app.errors import Unavailable
from core import metrics
from core.kafka import make_producer
from core.settings import Settings

log = logging.getLogger(__name__)


class _Waiter:
    """Counts down the delivery reports of one request's messages."""

    def __init__(self, count: int) -> None:
        self.outcomes: list[Unavailable | None] = [
            Unavailable("Kafka did not acknowledge the request in time")
        ] * count
        self.pending = count
        self.lock = threading.Lock()
        self.done = threading.Event()
        if count == 0:
            self.done.set()

    def callback(self, index: int, sent: float) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _: Message) -> None:
            # Runs on the delivery thread; never raises.
            if err is None:
                metrics.PRODUCE_LATENCY.observe(time.perf_counter() - sent)
                outcome = None
            else:
                outcome = Unavailable(f"Kafka did not take the request: {err.str()}")
            with self.lock:
                self.outcomes[index] = outcome
                self.pending -= 1
                if self.pending == 0:
                    self.done.set()

        return on_delivery

    def abandon(self, first: int, count: int) -> None:
        """Messages from `first` on were never produced (the local queue was full)."""
        with self.lock:
            self.pending -= count - first
            for index in range(first, count):
                self.outcomes[index] = Unavailable(
                    "too many requests in flight to Kafka; retry shortly",
                    headers={"Retry-After": "1"},
                )
            if self.pending <= 0:
                self.done.set()

    def expire(self) -> None:
        with self.lock:
            self.done.set()


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

    def send(self, messages: list[tuple[str, bytes, bytes]]) -> list[Unavailable | None]:
        """Produce (topic, key, value) messages and wait until Kafka has acknowledged each,
        or the produce timeout passed. Returns, per message, None once it is durable or the
        reason it is not. Raises Unavailable at once when the local queue is full (nothing
        of this call was produced then, or what was is reported as not acknowledged)."""
        waiter = _Waiter(len(messages))
        sent = time.perf_counter()
        for index, (topic, key, value) in enumerate(messages):
            try:
                self.producer.produce(
                    topic, key=key, value=value, on_delivery=waiter.callback(index, sent)
                )
            except BufferError:
                waiter.abandon(index, len(messages))
                if index == 0:
                    raise Unavailable(
                        "too many requests in flight to Kafka; retry shortly",
                        headers={"Retry-After": "1"},
                    ) from None
                break
        if not waiter.done.wait(self.timeout + 1.0):
            waiter.expire()
        return waiter.outcomes

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=1)
        left = self.producer.flush(self.timeout)
        if left:
            log.error("%d requests still unacknowledged at shutdown", left)
