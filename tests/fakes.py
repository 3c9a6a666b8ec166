"""Small fakes for the loops' unit tests (bridge, worker run, recorder, reconciler,
submission), beside the end-to-end tests that run them against the real stack.

Each fake does what the real client promises and no more: the Kafka producer reports a
delivery only on `poll`/`flush` and can refuse a chosen message the way librdkafka does
(a `KafkaException` from `produce`); the consumer hands out the messages a test queued,
none from a paused partition; Redis is a dictionary. Clocks move only when a test (or an
idle poll, which waits out its timeout) moves them, so nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bridge.dispatcher import FINISHED, Capacity, Dispatch, Sent
from core.messages import StatusEvent, TaskRequest, decode_event, decode_request
from core.priority import Priority
from core.settings import Settings

TEAMS = ["alpha", "bravo"]


def unit_settings(**overrides: Any) -> Settings:
    """Settings for unit tests: defaults and two teams, whatever a `.env` file says."""
    values: dict[str, Any] = {"teams": TEAMS, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        """So the fake can stand in for the `time` module of code that reads `time.monotonic`."""
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Kafka.


class FakeMessage:
    """A Kafka message as confluent_kafka's `Message` shows it."""

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = 0,
        offset: int = 0,
        headers: list[tuple[str, Any]] | None = None,
        error: KafkaError | None = None,
    ) -> None:
        self._topic = topic
        self._value = value
        self._key = key
        self._partition = partition
        self._offset = offset
        self._headers = headers
        self._error = error

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._headers

    def error(self) -> KafkaError | None:
        return self._error

    def header(self, name: str) -> str | None:
        """The header's value as text (a test helper; not in confluent_kafka)."""
        for key, value in self._headers or []:
            if key == name:
                return value.decode() if isinstance(value, bytes) else value
        return None


class FakeConsumer:
    """A consumer whose messages are the ones a test queued, offsets counting up per
    partition. It records what the loop stores, commits, pauses and resumes.

    An idle `poll`/`consume` moves `clock` (if given) by its timeout, as the real wait
    would, and sets `stop_when_idle` (if given): a loop's `run` then ends once it has
    read everything."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.waiting: list[FakeMessage] = []
        self.next_offset: dict[tuple[str, int], int] = {}
        self.assigned: list[tuple[str, int]] = []
        self.paused: set[tuple[str, int]] = set()
        self.pauses = 0
        self.resumes = 0
        self.polls = 0
        self.stored: dict[tuple[str, int], int] = {}  # the last offset stored per partition
        self.committed: dict[tuple[str, int], int] = {}
        self.journal: list[str] | None = None  # if set, "store" is appended on each store
        self.subscription: list[str] = []
        self.stop_when_idle: threading.Event | None = None
        self.closed = False

    # What a test does.

    def queue(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int = 0
    ) -> FakeMessage:
        tp = (topic, partition)
        offset = self.next_offset.get(tp, 0)
        self.next_offset[tp] = offset + 1
        message = FakeMessage(topic, value, key=key, partition=partition, offset=offset)
        self.waiting.append(message)
        return message

    # What the loop calls.

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.subscription = list(topics)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(p.topic, p.partition) for p in partitions]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.assigned]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        ready = [m for m in self.waiting if (m.topic(), m.partition()) not in self.paused]
        taken = ready[:num_messages]
        gone = {id(m) for m in taken}
        self.waiting = [m for m in self.waiting if id(m) not in gone]
        if not taken:
            if self.clock is not None and timeout > 0:
                self.clock.advance(timeout)
            if self.stop_when_idle is not None:
                self.stop_when_idle.set()
        return taken

    def poll(self, timeout: float | None = None) -> FakeMessage | None:
        self.polls += 1
        taken = self.consume(1, timeout or 0)
        return taken[0] if taken else None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pauses += 1
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumes += 1
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def store_offsets(
        self, message: Any = None, offsets: list[TopicPartition] | None = None
    ) -> None:
        for p in offsets or []:
            self.stored[(p.topic, p.partition)] = p.offset
        if self.journal is not None:
            self.journal.append("store")

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        for p in offsets or []:
            self.committed[(p.topic, p.partition)] = p.offset

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """A producer that keeps what it is given. A delivery is reported (successful) on the
    next `poll` or `flush`, as librdkafka does; `refuse` makes `produce` raise a
    non-fatal KafkaException for chosen messages, as librdkafka does for a message over
    its size limit. Safe to use from a delivery thread."""

    def __init__(self) -> None:
        self.produced: list[FakeMessage] = []
        self._refusals: list[tuple[Callable[[FakeMessage], bool], int]] = []
        self._undelivered: list[tuple[Callable[..., None] | None, FakeMessage]] = []
        self._ready = threading.Condition()

    def refuse(
        self, which: Callable[[FakeMessage], bool], code: int = KafkaError.MSG_SIZE_TOO_LARGE
    ) -> None:
        self._refusals.append((which, code))

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, Any]] | None = None,
        on_delivery: Callable[..., None] | None = None,
        **_: Any,
    ) -> None:
        message = FakeMessage(topic, value, key=key, headers=headers)
        for which, code in self._refusals:
            if which(message):
                raise KafkaException(KafkaError(code, "refused by the fake producer"))
        with self._ready:
            self.produced.append(message)
            self._undelivered.append((on_delivery, message))
            self._ready.notify_all()

    def poll(self, timeout: float | None = None) -> int:
        with self._ready:
            if not self._undelivered and timeout:
                self._ready.wait(timeout)
            reports, self._undelivered = self._undelivered, []
        for on_delivery, message in reports:
            if on_delivery is not None:
                on_delivery(None, message)
        return len(reports)

    def flush(self, timeout: float | None = None) -> int:
        self.poll(0)
        return 0

    # What a test reads.

    def on(self, topic: str) -> list[FakeMessage]:
        return [m for m in self.produced if m.topic() == topic]

    def events(self, topic: str = "tasks.status") -> list[StatusEvent]:
        return [decode_event(m.value()) for m in self.on(topic)]

    def requests(self, topic: str) -> list[TaskRequest]:
        return [decode_request(m.value()) for m in self.on(topic)]


def status_is(status: str, topic: str = "tasks.status") -> Callable[[FakeMessage], bool]:
    """Selects the status events of one status (for `FakeProducer.refuse`)."""
    needle = f'"status":"{status}"'.encode()
    return lambda m: m.topic() == topic and needle in (m.value() or b"")


# Redis and Postgres.


class FakeRedis:
    """The few Redis commands the loops use, over dictionaries (expiry is not modelled)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(
        self,
        key: str,
        value: bytes | str | int,
        ex: int | None = None,
        nx: bool = False,
        get: bool = False,
    ) -> bool | bytes | None:
        previous = self.data.get(key)
        if not (nx and previous is not None):
            self.data[key] = _as_bytes(value)
        if get:
            return previous
        return not (nx and previous is not None)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.data.get(key) for key in keys]

    def delete(self, *keys: str) -> int:
        return sum(self.data.pop(key, None) is not None for key in keys)

    def exists(self, *keys: str) -> int:
        return sum(key in self.data for key in keys)

    def incr(self, key: str) -> int:
        value = int(self.data.get(key, b"0")) + 1
        self.data[key] = str(value).encode()
        return value

    def hset(self, key: str, mapping: dict[Any, Any]) -> int:
        fields = self.hashes.setdefault(key, {})
        fields.update({_as_bytes(k): _as_bytes(v) for k, v in mapping.items()})
        return len(mapping)

    def hget(self, key: str, name: str | bytes) -> bytes | None:
        return self.hashes.get(key, {}).get(_as_bytes(name))

    def expire(self, key: str, seconds: int) -> bool:
        return key in self.data or key in self.hashes

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def close(self) -> None:
        pass


def _as_bytes(value: str | bytes | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class FakePipeline:
    """Queues commands; `execute` runs them and returns their replies in order."""

    def __init__(self, client: FakeRedis) -> None:
        self.client = client
        self.commands: list[Callable[[], Any]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        command = getattr(self.client, name)

        def queued(*args: Any, **kwargs: Any) -> None:
            self.commands.append(lambda: command(*args, **kwargs))

        return queued

    def execute(self) -> list[Any]:
        commands, self.commands = self.commands, []
        return [command() for command in commands]


class FakeEngine:
    """Stands in for a SQLAlchemy Engine where a loop runs a query and reads its rows:
    every statement is recorded with its parameters, and every query answers `rows`."""

    def __init__(self, rows: Iterable[Any] = ()) -> None:
        self.rows = list(rows)
        self.executed: list[tuple[Any, Any]] = []

    @contextmanager
    def connect(self) -> Iterator[_FakeConnection]:
        yield _FakeConnection(self)

    @contextmanager
    def begin(self) -> Iterator[_FakeConnection]:
        yield _FakeConnection(self)


class _FakeConnection:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def execute(self, statement: Any, parameters: Any = None) -> _FakeResult:
        self.engine.executed.append((statement, parameters))
        return _FakeResult(self.engine.rows)


class _FakeResult:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def all(self) -> list[Any]:
        return list(self.rows)


# The bridge's broker.


def _claim(item: Dispatch) -> tuple[str, int, int]:
    """What the dispatcher's claim is keyed by: a task's delivery (dispatch, retries)."""
    return (item.task_id, item.envelope.request.dispatch, item.envelope.request.retries)


class FakeDispatcher:
    """Stands in for bridge.dispatcher.CeleryDispatcher. The workers' room is what the
    test sets (`slots`, `queued`, `reserved`); a published message counts as queued, as
    on the real broker, until the test empties the queue. `send` skips what was marked
    (a delivery already sent) and `finished` (tasks that ended); `refuse` makes it
    refuse a task as unencodable; `failure`, while set, is raised by `capacity` and
    `send` (the broker is away)."""

    def __init__(self, slots: int = 0, *, reserved: int = 0) -> None:
        self.slots = slots
        self.reserved = reserved
        self.queued = {priority: 0 for priority in Priority.ordered()}
        self.delivered: dict[tuple[str, int, int], str] = {}
        self.finished: set[str] = set()
        self.outcomes: dict[str, bytes] = {}  # kept outcomes (a finished task may have none)
        self.refuse: dict[str, str] = {}
        self.failure: Exception | None = None
        self.published: list[list[Dispatch]] = []
        self.marked: list[Dispatch] = []

    def capacity(self) -> Capacity:
        if self.failure is not None:
            raise self.failure
        return Capacity(slots=self.slots, queued=dict(self.queued), reserved=self.reserved)

    def kept(self, task_ids: list[str]) -> dict[str, bytes]:
        return {t: self.outcomes[t] for t in task_ids if t in self.outcomes}

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]:
        before = self.kept(list(outcomes))
        for task_id, outcome in outcomes.items():
            self.outcomes.setdefault(task_id, outcome)
        return before

    def _before(self, item: Dispatch) -> str | None:
        if item.task_id in self.finished or item.task_id in self.outcomes:
            return FINISHED
        return self.delivered.get(_claim(item))

    def send(self, messages: list[list[Dispatch]]) -> Sent:
        if self.failure is not None:
            raise self.failure
        sent = Sent()
        for message in messages:
            before = {item.task_id: self._before(item) for item in message}
            sent.before.update(before)
            fresh = [item for item in message if before[item.task_id] is None]
            reason = next((self.refuse[i.task_id] for i in fresh if i.task_id in self.refuse), None)
            if reason is not None:
                sent.refused.update({item.task_id: reason for item in fresh})
            elif fresh:
                self.published.append(fresh)
                self.queued[fresh[0].queue] += 1
                sent.pushed += 1
        return sent

    def mark(self, batch: list[Dispatch]) -> None:
        self.marked.extend(batch)
        for item in batch:
            self.delivered[_claim(item)] = item.queue.value

    def workers_took_everything(self) -> None:
        """The workers emptied the Celery queues (and finished what they took)."""
        self.queued = {priority: 0 for priority in Priority.ordered()}

    @property
    def published_ids(self) -> list[str]:
        return [item.task_id for message in self.published for item in message]

    def published_to(self, queue: Priority) -> list[str]:
        return [
            item.task_id for message in self.published for item in message if item.queue is queue
        ]
