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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from confluent_kafka import Producer
from sqlalchemy import Engine, text

from core import leases, metrics, redis_keys
from core.messages import TaskRequest, utcnow
from core.priority import Priority
from core.settings import Settings

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 2.0
BATCH = 500

_STUCK = text(
    """
    SELECT t.task_id, t.team, t.routine, t.priority, t.payload, t.created_at, t.status,
           t.updated_at,
           (SELECT count(*) FROM task_events e
             WHERE e.task_id = t.task_id AND e.status = 'RETRYING') AS retries,
           (SELECT coalesce(max((e.detail->>'dispatch')::int), 0) FROM task_events e
             WHERE e.task_id = t.task_id AND e.status = 'QUEUED') AS dispatch
      FROM tasks t
     WHERE t.status IN ('QUEUED', 'STARTED', 'RETRYING')
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


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        client: redis.Redis,
        producer: Producer,
        lease_seconds: float = leases.RUNNING_SECONDS,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = client
        self.producer = producer
        self.lease_seconds = lease_seconds
        # Tasks sent again recently: not again until their new dispatch had time to show.
        self._recent: dict[str, float] = {}

    def run(self, stop: threading.Event) -> None:
        log.info("reconciler checking unfinished tasks every %.0fs", INTERVAL_SECONDS)
        while not stop.wait(INTERVAL_SECONDS):
            try:
                result = self.reconcile()
            except Exception as exc:  # Postgres, Redis or Kafka away: try again next time
                log.warning("reconciler pass failed: %s", exc)
                continue
            if result.reannounced or result.redispatched:
                log.info(
                    "reconciler: %d re-announced, %d dispatched again (of %d examined)",
                    result.reannounced,
                    result.redispatched,
                    result.examined,
                )

    def reconcile(self) -> PassResult:
        now = time.monotonic()
        self._recent = {
            t: at for t, at in self._recent.items() if now - at < 3 * self.lease_seconds
        }
        before = utcnow() - timedelta(seconds=self.lease_seconds)
        with self.engine.connect() as conn:
            rows = conn.execute(_STUCK, {"before": before, "limit": BATCH}).all()
        result = PassResult(examined=len(rows))
        if not rows:
            return result
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.get(redis_keys.outcome(str(row.task_id)))
            pipe.get(leases.key(str(row.task_id)))
        replies = pipe.execute()
        for row, outcome, holder in zip(rows, replies[0::2], replies[1::2], strict=True):
            task_id = str(row.task_id)
            if outcome is not None:
                self.producer.produce(
                    self.settings.status_topic, key=task_id.encode(), value=outcome
                )
                result.reannounced += 1
                metrics.RECONCILED.labels("reannounced").inc()
            elif holder is None and task_id not in self._recent:
                self._redispatch(row, now)
                result.redispatched += 1
                metrics.RECONCILED.labels("redispatched").inc()
        if self.producer.flush(30):
            raise RuntimeError("reconciler output not acknowledged by Kafka")
        return result

    def _redispatch(self, row: Any, now: float) -> None:
        task_id = str(row.task_id)
        idle = (utcnow() - row.updated_at).total_seconds()
        request = TaskRequest(
            task_id=task_id,
            team=row.team,
            routine=row.routine,
            priority=Priority(row.priority),
            accepted_at=row.created_at,
            payload=row.payload,
            dispatch=int(row.dispatch) + 1,
            retries=int(row.retries),
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
