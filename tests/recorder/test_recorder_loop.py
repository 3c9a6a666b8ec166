"""The recorder's loop with fakes: when offsets are stored, what is dead-lettered, and
how a Postgres outage is waited out. Postgres itself is replaced by a stand-in for
`write_batch` (the writer's rules are tested in test_writer_plan.py and, against real
Postgres, end to end); the loop's waits run on a fake clock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy.exc import DataError, OperationalError

import recorder.service
from core.dead_letters import DeadLetters
from core.messages import StatusEvent, decode_event
from core.settings import Settings
from core.status import Status
from recorder.observers import Observer
from recorder.service import Recorder
from recorder.writer import BatchResult
from tests.fakes import FakeClock, FakeConsumer, FakeEngine, FakeProducer, unit_settings

STATUS = "tasks.status"


class Postgres:
    """Stands in for recorder.writer.write_batch: keeps what it is given, refuses the
    content of chosen events as Postgres does (a DataError for the whole batch), and is
    away (OperationalError) for the next `outages` calls."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.written: list[StatusEvent] = []
        self.refused: set[str] = set()  # event ids
        self.outages = 0

    def write_batch(self, engine: Any, events: list[StatusEvent]) -> BatchResult:
        if self.outages:
            self.outages -= 1
            raise OperationalError("INSERT", {}, psycopg.OperationalError("connection refused"))
        if any(event.event_id in self.refused for event in events):
            orig = psycopg.errors.NumericValueOutOfRange("integer out of range")
            raise DataError("INSERT", {}, orig)
        self.written.extend(events)
        self.journal.append("write")
        return BatchResult(len(events), 0, len({event.task_id for event in events}))


@dataclass
class Rig:
    settings: Settings
    recorder: Recorder
    consumer: FakeConsumer
    producer: FakeProducer
    postgres: Postgres
    journal: list[str]
    clock: FakeClock
    stop: threading.Event

    def send(self, event: StatusEvent | bytes) -> None:
        value = event.encode() if isinstance(event, StatusEvent) else event
        self.consumer.queue(STATUS, value)

    def step(self) -> BatchResult | None:
        return self.recorder.step(self.stop)


class JournalingConsumer(FakeConsumer):
    """Also writes its pauses and resumes in the journal, to see their order."""

    def pause(self, partitions: Any) -> None:
        super().pause(partitions)
        self.journal_entry("pause")

    def resume(self, partitions: Any) -> None:
        super().resume(partitions)
        self.journal_entry("resume")

    def journal_entry(self, entry: str) -> None:
        assert self.journal is not None
        self.journal.append(entry)


@pytest.fixture()
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    settings = unit_settings()
    journal: list[str] = []
    clock = FakeClock()
    consumer, producer, postgres = JournalingConsumer(clock), FakeProducer(), Postgres(journal)
    consumer.journal = journal
    consumer.assign([])
    monkeypatch.setattr(recorder.service, "write_batch", postgres.write_batch)
    loop = Recorder(
        settings,
        consumer=cast(Any, consumer),
        engine=cast(Any, FakeEngine()),
        dead_letters=DeadLetters(cast(Any, producer), settings, stage="recorder"),
        clock=clock,  # the fake consumer's idle polls move it through the outage backoff
    )
    try:
        yield Rig(settings, loop, consumer, producer, postgres, journal, clock, threading.Event())
    finally:
        loop._writer.shutdown(wait=True)


def event(status: Status = Status.STARTED, attempt: int = 1) -> StatusEvent:
    return StatusEvent(
        task_id=str(uuid.uuid4()),
        status=status,
        team="alpha",
        routine="sleep",
        priority="medium",
        attempt=attempt,
    )


def test_offsets_are_stored_only_after_the_batch_is_written(rig: Rig) -> None:
    for _ in range(3):
        rig.send(event())
    rig.step()  # read, and handed to the writer
    assert rig.consumer.stored == {}

    rig.step()  # the written batch is finished with
    assert rig.journal == ["write", "store"]
    assert rig.consumer.stored == {(STATUS, 0): 3}
    assert len(rig.postgres.written) == 3


def test_a_refused_event_is_dead_lettered_alone_and_the_rest_written(rig: Rig) -> None:
    events = [event() for _ in range(5)]
    poison = events[2]
    rig.postgres.refused.add(poison.event_id)
    for each in events:
        rig.send(each)
    rig.step()
    rig.step()

    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert decode_event(dead.value()) == poison
    assert "Postgres refused the event: integer out of range" in (dead.header("reason") or "")
    others = [e for e in events if e is not poison]
    assert [e for e in rig.postgres.written if e.task_id != poison.task_id] == others
    [ending] = [e for e in rig.postgres.written if e.task_id == poison.task_id]
    assert (ending.status, ending.attempt) == (Status.FAILED, 0)
    assert rig.consumer.stored == {(STATUS, 0): 5}


def test_a_malformed_event_is_dead_lettered_and_the_rest_written(rig: Rig) -> None:
    good = event()
    rig.send(b"\x00 not an event")
    rig.send(good)
    rig.step()
    rig.step()

    [dead] = rig.producer.on(rig.settings.dlq_topic)
    assert dead.value() == b"\x00 not an event"
    assert (dead.header("reason") or "").startswith("malformed status event")
    assert rig.postgres.written == [good]
    assert rig.consumer.stored == {(STATUS, 0): 2}


def test_a_postgres_outage_pauses_the_consumer_until_the_batch_is_written(rig: Rig) -> None:
    rig.postgres.outages = 3  # the writer's try, then two more while paused
    started = rig.clock.now
    rig.send(event())
    rig.step()
    rig.step()

    assert rig.journal == ["pause", "write", "resume", "store"]
    assert rig.consumer.polls >= 3  # it kept its place in the consumer group meanwhile
    assert rig.clock.now - started >= 0.1 + 0.2  # it backed off between tries
    assert rig.consumer.stored == {(STATUS, 0): 1}


def test_stopping_during_an_outage_leaves_the_offsets_to_be_read_again(rig: Rig) -> None:
    rig.postgres.outages = 100
    rig.send(event())
    rig.step()
    rig.stop.set()
    assert rig.step() is None

    assert rig.journal == ["pause", "resume"]
    assert rig.consumer.stored == {}


def test_a_failing_observer_does_not_stop_the_others_or_the_recording(rig: Rig) -> None:
    seen: list[list[StatusEvent]] = []

    class Failing(Observer):
        def on_batch(self, events: list[StatusEvent]) -> None:
            raise RuntimeError("observer bug")

    class Keeping(Observer):
        def on_batch(self, events: list[StatusEvent]) -> None:
            seen.append(events)

    rig.recorder.observers = [Failing(), Keeping()]
    sent = event()
    rig.send(sent)
    rig.step()
    rig.step()

    assert seen == [[sent]]
    assert rig.consumer.stored == {(STATUS, 0): 1}


class JournalingAnnouncer:
    """Stands in for core.task_done.Announcer: notes in the journal what it would publish."""

    def __init__(self, journal: list[str], *, fails: bool = False) -> None:
        self.journal = journal
        self.fails = fails
        self.batches: list[list[str]] = []

    def announce(self, events: list[StatusEvent]) -> int:
        if self.fails:
            raise RuntimeError("announcer bug")
        ended = [e.task_id for e in events if e.status.terminal]
        self.batches.append(ended)
        self.journal.append("announce")
        return len(ended)

    def close(self) -> None:
        pass


def test_the_tasks_ended_in_a_batch_are_announced_once_right_after_its_write(rig: Rig) -> None:
    announcer = JournalingAnnouncer(rig.journal)
    rig.recorder.announcer = cast(Any, announcer)
    running, done, failed = event(), event(Status.SUCCEEDED), event(Status.FAILED)
    for each in (running, done, failed):
        rig.send(each)
    rig.step()
    rig.step()
    assert rig.journal == ["write", "announce", "store"]
    assert announcer.batches == [[done.task_id, failed.task_id]]


def test_an_announcement_that_fails_does_not_stop_the_recording(rig: Rig) -> None:
    rig.recorder.announcer = cast(Any, JournalingAnnouncer(rig.journal, fails=True))
    rig.send(event(Status.SUCCEEDED))
    rig.step()
    rig.step()
    assert rig.journal == ["write", "store"]
    assert rig.consumer.stored == {(STATUS, 0): 1}
