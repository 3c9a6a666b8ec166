"""The bridge: a Kafka consumer group that turns task requests into Celery tasks.

Each request is taken in (bridge.intake: checked, routed by core.routing, announced),
waits in the priority scheduler until the workers have room, and is then published to
its Celery queue (bridge.sender). Offsets are stored only once a message is dispatched,
dead-lettered or found to be a duplicate, so a crash re-reads what was not finished
(at-least-once); a per-delivery mark in Redis, set once a task is published, makes the
re-read harmless. A message that cannot become a task goes to the dead-letter topic with
its reason and original bytes (bridge.announce), and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bridge.announce import Announcer, Pending, Settling
from bridge.dispatcher import Dispatcher
from bridge.intake import Intake
from bridge.offsets import OffsetTracker
from bridge.scheduler import PriorityScheduler
from bridge.sender import Sender
from core import metrics, redis_keys
from core.dead_letters import Source
from core.priority import Priority
from core.routing import RoutingPolicy
from core.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500
IDLE_POLL = 0.1
BUSY_POLL = 0.002


def record_consumer_lag(stats_json: str) -> None:
    """librdkafka's statistics callback: publish each partition's consumer lag."""
    try:
        stats = orjson.loads(stats_json)
        for topic, info in stats.get("topics", {}).items():
            for partition, numbers in info.get("partitions", {}).items():
                lag = numbers.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    metrics.CONSUMER_LAG.labels(topic, partition).set(lag)
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        log.debug("unreadable consumer statistics: %s", exc)


class Bridge:
    """The loop: read a batch, take each message in (bridge.intake), dispatch what the
    workers have room for (bridge.sender), store the offsets of what is finished."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        producer: Producer,
        dispatcher: Dispatcher,
        policy: RoutingPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.clock = clock
        self.scheduler: PriorityScheduler[Pending] = PriorityScheduler(settings.priority_weights)
        self.offsets = OffsetTracker()
        self.team_by_topic = {settings.request_topic(t): t for t in settings.teams}
        self.announcer = Announcer(producer, settings)
        self.intake = Intake(
            self.team_by_topic,
            policy,
            self.announcer,
            hold_seconds=settings.schedule_hold_seconds,
        )
        self.parked: list[Settling] = []  # their offsets wait for their SCHEDULED events
        self._failed_seen = 0
        self.sender = Sender(
            dispatcher=dispatcher,
            scheduler=self.scheduler,
            policy=policy,
            announcer=self.announcer,
            offsets=self.offsets,
            headroom=settings.dispatch_headroom,
            warn=self._warn,
            keep_seconds=redis_keys.kept_for_seconds(settings.schedule_max_days),
        )
        self.paused = False
        self._last_warning = 0.0

    def run(self, stop: threading.Event, ready_file: Path | None = None) -> None:
        self.consumer.subscribe(
            list(self.team_by_topic),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.announcer.dead_letters.stop = stop
        log.info("bridge consuming %s", ", ".join(self.team_by_topic))
        if ready_file is not None:
            ready_file.touch()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self._shutdown()

    def step(self) -> None:
        messages = self._read()
        now, wall = self.clock(), datetime.now(UTC)
        for message in messages:
            self._take(message, now, wall)
        self.sender.dispatch(now)
        self._settle()
        self._store_offsets()
        self.producer.poll(0)
        self._flow_control()

    def _read(self) -> list[Message]:
        """What is there now, or else wait (up to the poll timeout) for the first
        message: `consume` alone would wait for a full batch or the whole timeout."""
        messages = self.consumer.consume(BATCH, 0)
        # The workers' room is read before the step: while the bridge would wait anyway,
        # so that a task which ends the wait is sent without a round trip to Redis first.
        # Read so, it is at most a poll timeout old; meanwhile workers only take from what
        # it counted (another bridge's sends aside), so the step sends no more than then.
        self.sender.read_capacity()
        if messages:
            return messages
        first = self.consumer.poll(self._poll_timeout())
        if first is None:
            return []
        return [first, *self.consumer.consume(BATCH - 1, 0)]

    def _poll_timeout(self) -> float:
        if self.scheduler.ready_count:
            return BUSY_POLL
        release = self.scheduler.next_release()
        if release is not None:
            return max(0.0, min(IDLE_POLL, release - self.clock()))
        return IDLE_POLL

    def _take(self, message: Message, now: float, wall: datetime) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        self.offsets.seen((topic, partition), offset)
        waiting = self.intake.take(message, Source(topic, partition, offset), now, wall)
        if waiting is None:  # dead-lettered: finished with
            self.offsets.done((topic, partition), offset)
        elif isinstance(waiting, Settling):
            self.parked.append(waiting)
        else:
            self.sender.admit(waiting, now)

    def _settle(self) -> None:
        """Messages whose last event is on its way (parked, or expired here) are
        finished with once Kafka has acknowledged those events; until then their offsets
        stay, and if some event was lost on the way they are all said again."""
        settling = [*self.parked, *self.sender.ended]
        if not settling:
            return
        events = self.announcer.events
        if events.flush(5):
            self._warn(f"{len(settling)} status events not yet acknowledged by Kafka")
            return
        if events.failed > self._failed_seen:
            self._failed_seen = events.failed
            for item in settling:
                self.announcer.ended(item.event)
            return
        for item in settling:
            self.offsets.done(item.tp, item.offset)
        metrics.PARKED.inc(len(self.parked))
        self.parked, self.sender.ended = [], []

    # Offsets, flow control, rebalances.

    def _store_offsets(self) -> None:
        committable = self.offsets.committable()
        if not committable:
            return
        try:
            self.consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in committable.items()]
            )
        except Exception as exc:  # a partition revoked a moment ago
            log.debug("store_offsets: %s", exc)

    def _flow_control(self) -> None:
        for queue in Priority.ordered():
            metrics.WAITING.labels(queue.value).set(self.scheduler.waiting(queue))
        waiting = len(self.scheduler)
        limit = self.settings.bridge_max_waiting
        if not self.paused and waiting >= limit:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            log.info("pausing intake: %d tasks wait for workers", waiting)
        elif self.paused and waiting < limit // 2:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
            log.info("resuming intake: %d tasks wait", waiting)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        dropped = self.scheduler.drop(keys)
        self._settle()
        self.parked = [p for p in self.parked if p.tp not in set(keys)]
        self.sender.ended = [e for e in self.sender.ended if e.tp not in set(keys)]
        self.sender.drop(set(keys))
        committable = self.offsets.committable()
        mine = [
            TopicPartition(t, p, committable[(t, p)]) for (t, p) in keys if (t, p) in committable
        ]
        if mine:
            try:
                consumer.commit(offsets=mine, asynchronous=False)
            except Exception as exc:
                log.info("commit on revoke: %s", exc)
        self.offsets.forget(keys)
        log.info("revoked %d partitions; %d waiting tasks handed over", len(keys), len(dropped))

    def _warn(self, text: str) -> None:
        now = self.clock()
        if now - self._last_warning > 5:
            log.warning(text)
            self._last_warning = now

    def _shutdown(self) -> None:
        log.info(
            "bridge stopping; %d waiting tasks are left to the next owner", len(self.scheduler)
        )
        self._store_offsets()
        undelivered = self.announcer.events.flush(10)
        if undelivered:
            log.error("%d status events were not delivered before shutdown", undelivered)
        self.consumer.close()
