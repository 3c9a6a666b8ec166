"""Consumes the status topic and records it in Postgres, in batches.

Offsets are stored only after the batch is committed to Postgres. While Postgres is
unreachable the consumer pauses (staying in its group) and retries the same batch with
backoff, so events produced during an outage are recorded when it returns. A malformed
event, or one whose content Postgres refuses, goes to the dead-letter topic (and the
task of a refused event ends FAILED with the reason); the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from core import metrics
from core.dead_letters import DeadLetters, Source
from core.messages import MalformedMessage, StatusEvent, decode_event, utcnow
from core.settings import Settings
from core.task_done import Announcer
from recorder.observers import Observer
from recorder.writer import BatchResult, write_batch

log = logging.getLogger(__name__)

BATCH = 5000
POLL_SECONDS = 0.05
MAX_BACKOFF = 5.0


@dataclass
class _Batch:
    """A batch handed to the writer thread, with what to do once it is written."""

    future: Future[BatchResult]
    events: list[StatusEvent]
    last: dict[tuple[str, int], int]


@dataclass
class Recorder:
    settings: Settings
    _: KW_ONLY
    consumer: Consumer
    engine: Engine
    dead_letters: DeadLetters
    observers: list[Observer] = field(default_factory=list)
    # Tells the API processes which tasks ended, so `?wait=` requests answer at once.
    announcer: Announcer | None = None
    clock: Callable[[], float] = time.monotonic
    recorded: int = field(default=0, init=False)
    malformed: int = field(default=0, init=False)
    _inflight: _Batch | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # One writer thread: Postgres works on a batch while the next one is decoded.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")

    def run(self, stop: threading.Event, ready_file: Path | None = None) -> None:
        self.dead_letters.stop = stop
        self.consumer.subscribe([self.settings.status_topic])
        log.info("recorder consuming %s", self.settings.status_topic)
        if ready_file is not None:
            ready_file.touch()
        try:
            while not stop.is_set():
                self.step(stop)
            self._finish(stop)
        finally:
            self._writer.shutdown(wait=True)
            for observer in self.observers:
                observer.close()
            if self.announcer is not None:
                self.announcer.close()
            self.consumer.close()

    def step(self, stop: threading.Event) -> BatchResult | None:
        """Read and decode the next batch while the previous one is being written (the
        writes stay in order: one at a time); returns the previous batch's result."""
        messages = self.consumer.consume(BATCH, POLL_SECONDS)
        events: list[StatusEvent] = []
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            last[(message.topic() or "", message.partition() or 0)] = message.offset() or 0
            event = self._decode(message)
            if event is not None:
                events.append(event)
        result = self._finish(stop)
        if last:
            future = self._writer.submit(self._write_isolating_poison, events)
            self._inflight = _Batch(future, events, last)
        elif result is None:
            self._notify(lambda observer: observer.on_idle())
        return result

    def _finish(self, stop: threading.Event) -> BatchResult | None:
        """Wait for the batch being written; if Postgres was away, write it here with
        retries (pausing the consumer). Then store its offsets and tell the observers."""
        batch, self._inflight = self._inflight, None
        if batch is None:
            return None
        try:
            result: BatchResult | None = batch.future.result()
        except OperationalError:
            result = self._write(batch.events, stop)
        if result is None:
            return None  # stopping with the batch unwritten: it is read again on restart
        if self.announcer is not None:
            try:
                self.announcer.announce(batch.events)
            except Exception:  # it logs its own failures; this is only a backstop
                log.exception("announcing ended tasks failed")
        self.consumer.store_offsets(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in batch.last.items()]
        )
        self.recorded += result.events_written
        metrics.EVENTS_RECORDED.inc(result.events_written)
        if batch.events:
            newest = max(event.at for event in batch.events)
            metrics.RECORDER_LAG.set(max(0.0, (utcnow() - newest).total_seconds()))
        events = batch.events
        self._notify(lambda observer: observer.on_batch(events))
        return result

    def _notify(self, call: Callable[[Observer], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:
                log.exception("observer %s failed", type(observer).__name__)

    def _decode(self, message: Message) -> StatusEvent | None:
        try:
            return decode_event(message.value())
        except MalformedMessage as exc:
            self.malformed += 1
            self.dead_letters.send(
                message.value(),
                reason=f"malformed status event: {exc.reason}",
                key=message.key(),
                source=Source(
                    message.topic() or "", message.partition() or 0, message.offset() or 0
                ),
                task_id=exc.task_id,
            )
            return None

    def _write(self, events: list[StatusEvent], stop: threading.Event) -> BatchResult | None:
        delay = 0.1
        paused = False
        try:
            while True:
                try:
                    return self._write_isolating_poison(events)
                except OperationalError as exc:
                    if not paused:
                        log.warning("Postgres unavailable, holding %d events: %s", len(events), exc)
                        self.consumer.pause(self.consumer.assignment())
                        paused = True
                deadline = self.clock() + delay
                while self.clock() < deadline:
                    if stop.is_set():
                        return None
                    # Keep our place in the consumer group while we wait.
                    self.consumer.poll(0.1)
                delay = min(MAX_BACKOFF, delay * 2)
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())
                log.info("Postgres is back; recording resumed")

    def _write_isolating_poison(self, events: list[StatusEvent]) -> BatchResult:
        """Write the batch; if its content is refused (by Postgres, or by the encoding on
        the way), split it until the one refused event is found, and dead-letter only
        that one. An outage (OperationalError) is raised for the caller to wait out."""
        try:
            return write_batch(self.engine, events)
        except OperationalError:
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise OperationalError(str(exc), None, exc.orig) from exc  # type: ignore[arg-type]
            reason = f"Postgres refused the event: {exc.orig}"
        except psycopg.OperationalError as exc:  # from the driver's own cursor (COPY)
            raise OperationalError(str(exc), None, exc) from exc
        except psycopg.Error as exc:
            reason = f"Postgres refused the event: {exc}"
        except Exception as exc:
            reason = f"the event cannot be written: {exc!r}"
        if len(events) == 1:
            self._refused(events[0], reason)
            return BatchResult(0, 1, 0)
        middle = len(events) // 2
        first = self._write_isolating_poison(events[:middle])
        second = self._write_isolating_poison(events[middle:])
        return BatchResult(
            first.events_written + second.events_written,
            first.events_dropped + second.events_dropped,
            first.tasks_touched + second.tasks_touched,
        )

    def _refused(self, event: StatusEvent, reason: str) -> None:
        """Postgres refuses this one event: it goes to the dead-letter topic, and its task
        ends FAILED with the reason (if even that cannot be written, the dead letter stays
        the only trace)."""
        self.malformed += 1
        try:
            value: bytes | None = event.encode()
        except TypeError:
            value = None
        reason = f"{event.status} event not recorded: {reason}"
        self.dead_letters.send(
            value, reason=reason, key=event.task_id.encode(), team=event.team, task_id=event.task_id
        )
        try:
            # Attempt 0: the refused event's own numbers may be what Postgres refused.
            write_batch(self.engine, [replace(event.refused_instead(reason), attempt=0)])
        except OperationalError:
            raise
        except Exception as exc:
            log.error(
                "cannot record the FAILED event either: %r", exc, extra={"task_id": event.task_id}
            )
