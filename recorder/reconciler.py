"""The reconciler: Postgres is the source of truth for what is unfinished.

Every few seconds it looks at tasks still QUEUED, STARTED or RETRYING that have not
moved for a lease period, and asks Redis who holds them (core.leases):
- the task's outcome is kept (it ended but its terminal event never got recorded):
  the outcome is announced again, with the same event id;
- a live lease holds it (queued, running, or waiting to retry): it is left alone;
- nothing holds it (its worker died, or the broker lost it — a Redis restart without
  persistence): it is dispatched again through Kafka as a new delivery
  (`dispatch + 1`), which the bridge schedules and claims like any other. Running it
  twice is prevented by the worker's running lease and kept outcome; the attempt cap
  ends a task that keeps killing its worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import Any

import redis
from confluent_kafka import KafkaException, Producer
from sqlalchemy import Engine, text

from core import leases, metrics, redis_keys
from core.dead_letters import DeadLetters
from core.messages import MalformedMessage, StatusEvent, utcnow
from core.outcomes import replay
from core.schema import request_of, sql_values
from core.settings import Settings
from core.status import IN_FLIGHT, Status
from core.status_publisher import EventRefused, StatusPublisher

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 2.0
BATCH = 500

_STUCK = text(
    f"""
    SELECT t.task_id, t.team, t.routine, t.priority, t.created_at, t.status, t.updated_at,
           t.idempotency_key, t.run_at, t.expires_at,
           coalesce(t.payload, (SELECT p.payload FROM task_payloads p
                                 WHERE p.task_id = t.task_id)) AS payload,
           (SELECT count(*) FROM task_events e
             WHERE e.task_id = t.task_id AND e.status = '{Status.RETRYING}') AS retries,
           (SELECT coalesce(max((e.detail->>'dispatch')::int), 0) FROM task_events e
             WHERE e.task_id = t.task_id AND e.status = '{Status.QUEUED}') AS dispatch,
           EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.task_id
                      AND e.status = '{Status.ACCEPTED}' AND e.detail ? 'request_bytes') AS large
      FROM tasks t
     WHERE t.status IN ({sql_values(IN_FLIGHT)})
       AND t.updated_at < :before
     ORDER BY t.updated_at
     LIMIT :limit
    """
)


@dataclass
class PassResult:
    examined: int = 0
    reannounced: int = 0
    redispatched: int = 0
    parked: int = 0


@dataclass
class Reconciler:
    settings: Settings
    _: KW_ONLY
    engine: Engine
    client: redis.Redis
    producer: Producer
    lease_seconds: float = leases.RUNNING_SECONDS
    clock: Callable[[], float] = time.monotonic
    # Tasks sent again recently: not again until their new dispatch had time to show.
    _recent: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.events = StatusPublisher(self.producer, self.settings)
        self.dead_letters = DeadLetters(self.producer, self.settings, stage="reconciler")

    def run(self, stop: threading.Event) -> None:
        log.info("reconciler checking unfinished tasks every %.0fs", INTERVAL_SECONDS)
        while not stop.wait(INTERVAL_SECONDS):
            try:
                result = self.reconcile()
            except Exception as exc:  # Postgres, Redis or Kafka away: try again next time
                log.warning("reconciler pass failed: %s", exc)
                continue
            if result.reannounced or result.redispatched or result.parked:
                log.info(
                    "reconciler: %d re-announced, %d dispatched again, %d parked (of %d examined)",
                    result.reannounced,
                    result.redispatched,
                    result.parked,
                    result.examined,
                )

    def reconcile(self) -> PassResult:
        now = self.clock()
        self._recent = {
            t: at for t, at in self._recent.items() if now - at < 3 * self.lease_seconds
        }
        before = utcnow() - timedelta(seconds=self.lease_seconds)
        with self.engine.connect() as conn:
            rows = conn.execute(_STUCK, {"before": before, "limit": BATCH}).all()
        result = PassResult(examined=len(rows))
        if not rows:
            return result
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.get(redis_keys.outcome(str(row.task_id)))
            pipe.get(leases.key(str(row.task_id)))
        replies = pipe.execute()
        for row, outcome, holder in zip(rows, replies[0::2], replies[1::2], strict=True):
            task_id = str(row.task_id)
            try:
                if outcome is not None:
                    self._reannounce(outcome)
                    result.reannounced += 1
                    metrics.RECONCILED.labels("reannounced").inc()
                elif holder is None and task_id not in self._recent:
                    self._redispatch(row, now)
                    result.redispatched += 1
                    metrics.RECONCILED.labels("redispatched").inc()
            except (MalformedMessage, EventRefused, KafkaException, TypeError, ValueError) as exc:
                if isinstance(exc, KafkaException) and exc.args[0].fatal():
                    raise
                self._park(row, outcome, exc)
                result.parked += 1
        if self.producer.flush(30):
            raise RuntimeError("reconciler output not acknowledged by Kafka")
        return result

    def _reannounce(self, outcome: bytes) -> None:
        for event in replay(outcome):  # with the STARTED event of the run it ends, if kept
            self.events.emit(event)

    def _park(self, row: Any, outcome: bytes | None, exc: Exception) -> None:
        """One task's outcome or re-dispatch cannot be sent: it goes to the dead-letter
        topic with the reason, the task ends FAILED, and the pass goes on."""
        task_id = str(row.task_id)
        what = (
            "its kept outcome cannot be announced" if outcome else "it cannot be dispatched again"
        )
        reason = f"reconciler: {what}: {getattr(exc, 'reason', None) or exc}"
        metrics.RECONCILED.labels("parked").inc()
        self.dead_letters.send(
            outcome, reason=reason, key=task_id.encode(), team=row.team, task_id=task_id
        )
        ending = StatusEvent.for_request(request_of(row), Status.FAILED, error=reason)
        # Kept first, as a worker does: whoever meets the task next finds it ended.
        self.client.set(redis_keys.outcome(task_id), ending.encode(), ex=redis_keys.KEY_TTL)
        self.events.emit(ending)

    def _redispatch(self, row: Any, now: float) -> None:
        task_id = str(row.task_id)
        if row.payload is None and row.large:
            # Produced around the API, its large payload was kept nowhere: running it
            # without one would be wrong.
            raise ValueError("its payload, too large for a status event, was not stored")
        idle = (utcnow() - row.updated_at).total_seconds()
        request = request_of(row, priority=None).sent_again(
            payload=row.payload,
            dispatch=int(row.dispatch) + 1,
            retries=int(row.retries),
            # It was dispatched once; a deadline to start by no longer applies if it ran.
            expires_at=row.expires_at if row.status == Status.QUEUED else None,
            note=f"dispatched again: {row.status} for {idle:.0f}s and nothing held it "
            "(worker lost or broker data lost)",
        )
        self.producer.produce(
            self.settings.request_topic(request.team),
            key=task_id.encode(),
            value=request.encode(),
        )
        self._recent[task_id] = now
        log.warning("dispatching a lost task again: %s", request.note, extra={"task_id": task_id})
