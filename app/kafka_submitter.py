"""Produces task requests and waits for Kafka's acknowledgement (acks=all).

One idempotent producer per process, shared by the request threads; a background
thread serves delivery reports. `send` returns only once the request is durable in
Kafka, or raises `Unavailable` within the produce timeout, so the API answers 503 fast
and never claims a task it has not stored.

The delivery thread also hands what became durable to `on_durable` before it wakes the
waiting requests: every request acknowledged in one poll shares that one call (the
accepted-task cache writes them with one Redis round trip instead of one per request).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.errors import ApiError, PayloadTooLarge, Unavailable
from core import metrics
from core.kafka import make_producer
from core.settings import Settings

log = logging.getLogger(__name__)

Message3 = tuple[str, bytes, bytes]  # (topic, key, value)
OnDurable = Callable[[list[tuple[bytes, bytes]]], None]


def refusal(error: KafkaError) -> ApiError:
    """What the client is told when Kafka refuses a request outright."""
    if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return PayloadTooLarge(f"payload: Kafka refused the request as too large: {error.str()}")
    return Unavailable(f"Kafka did not take the request: {error.str()}")


class _Waiter:
    """Counts down the delivery reports of one request's messages."""

    def __init__(
        self, messages: Sequence[Message3], finished: deque[_Waiter], *, hand_on: bool = True
    ) -> None:
        self.messages = messages
        self.hand_on = hand_on
        self.outcomes: list[ApiError | None] = [
            Unavailable("Kafka did not acknowledge the request in time")
        ] * len(messages)
        self.pending = len(messages)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self._finished = finished
        self.sent = time.perf_counter()
        if not messages:
            self.done.set()

    def durable(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of each message Kafka acknowledged, if they go to `on_durable`."""
        if not self.hand_on:
            return []
        return [
            (key, value)
            for (_, key, value), outcome in zip(self.messages, self.outcomes, strict=True)
            if outcome is None
        ]

    def report(self, index: int, err: KafkaError | None, _: Message) -> None:
        """The delivery report of message `index`; runs on the delivery thread, never raises."""
        outcome = None if err is None else refusal(err)
        with self.lock:
            self.outcomes[index] = outcome
            self.pending -= 1
            if self.pending == 0:
                metrics.PRODUCE_LATENCY.observe(time.perf_counter() - self.sent)
                # Woken by the delivery thread once this poll's batch is handed on.
                self._finished.append(self)

    def refuse(self, index: int, outcome: ApiError) -> None:
        """Message `index` was refused by the producer and will have no delivery report."""
        with self.lock:
            self.outcomes[index] = outcome
            self.pending -= 1
            if self.pending == 0:
                self._finished.append(self)

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
                self._finished.append(self)

    def expire(self) -> None:
        with self.lock:
            self.done.set()


class KafkaSubmitter:
    def __init__(
        self,
        settings: Settings,
        on_durable: OnDurable | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.timeout = settings.kafka_produce_timeout_seconds
        self.on_durable = on_durable
        self._finished: deque[_Waiter] = deque()  # appended to by delivery callbacks
        self.producer: Producer = producer or make_producer(
            settings,
            **{
                # Sent at once: a lone submit is sooner durable, and batches lose
                # nothing (docs/performance.md has the figures).
                "linger.ms": 0,
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
            self._wake_finished()

    def _wake_finished(self) -> None:
        finished: list[_Waiter] = []
        while self._finished:  # popleft is atomic: abandon() may append meanwhile
            finished.append(self._finished.popleft())
        if not finished:
            return
        if self.on_durable is not None:
            try:
                self.on_durable([pair for waiter in finished for pair in waiter.durable()])
            except Exception:  # the requests are durable in Kafka whatever this does
                log.exception("on_durable failed for %d requests", len(finished))
        for waiter in finished:
            waiter.done.set()

    def send(self, messages: list[Message3], *, hand_on: bool = True) -> list[ApiError | None]:
        """Produce (topic, key, value) messages and wait until Kafka has acknowledged each,
        or the produce timeout passed. Returns, per message, None once it is durable or the
        reason it is not. Raises Unavailable at once when the local queue is full (nothing
        of this call was produced then, or what was is reported as not acknowledged).
        `hand_on=False`: what is durable does not go to `on_durable` (not task requests)."""
        waiter = _Waiter(messages, self._finished, hand_on=hand_on)
        for index, (topic, key, value) in enumerate(messages):
            try:
                self.producer.produce(
                    topic, key=key, value=value, on_delivery=partial(waiter.report, index)
                )
            except BufferError:
                waiter.abandon(index, len(messages))
                if index == 0:
                    raise Unavailable(
                        "too many requests in flight to Kafka; retry shortly",
                        headers={"Retry-After": "1"},
                    ) from None
                break
            except KafkaException as exc:
                # Refused before it left: this message only (its size, say); the rest go on.
                error: KafkaError = exc.args[0]
                waiter.refuse(index, refusal(error))
        if not waiter.done.wait(self.timeout + 1.0):
            waiter.expire()
        return waiter.outcomes

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=1)
        left = self.producer.flush(self.timeout)
        self._wake_finished()
        if left:
            log.error("%d requests still unacknowledged at shutdown", left)
