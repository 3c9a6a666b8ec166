"""The releaser: sends scheduled tasks parked in Postgres back to the bridge near their time.

A task scheduled further ahead than SCHEDULE_HOLD_SECONDS is not held by the bridge: its
SCHEDULED event carries it here (tasks.status = SCHEDULED, run_at set). Every half second
the releaser takes the parked tasks due within half the hold window, produces each
request again to its team's topic (marked `released`, so the bridge holds it until its
run_at instead of parking it again), and marks them released in the same transaction
once Kafka has them all. So a release survives any restart:
- Postgres rolls the marks back if the releaser dies before Kafka acknowledged;
- a request produced twice (acknowledged, then the commit failed) is one task: the
  bridge's dispatch marks and the workers' claims run it once;
- a task cancelled while parked is no longer SCHEDULED and is not sent.
Several recorders run several releasers: `FOR UPDATE SKIP LOCKED` gives each its own rows.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta

from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import Engine, text

from core import metrics
from core.messages import utcnow
from core.schema import PARKED_SQL, request_of
from core.settings import Settings
from core.status import Status

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.5
BATCH = 2_000

# A task due within the hold is SCHEDULED here too, but a bridge keeps it (its offset
# uncommitted until it is dispatched, so a restart re-reads it): its SCHEDULED event says
# held_by "bridge", and it is not sent again. The event is recorded in the transaction
# that made the task SCHEDULED.
_DUE = text(
    f"""
    UPDATE tasks AS t SET released_at = now()
     WHERE t.task_id IN (SELECT w.task_id FROM tasks w
                          WHERE {PARKED_SQL} AND run_at <= :until
                            AND NOT EXISTS (
                                SELECT 1 FROM task_events e
                                 WHERE e.task_id = w.task_id
                                   AND e.status = '{Status.SCHEDULED.value}'
                                   AND e.detail ->> 'held_by' = 'bridge')
                          ORDER BY run_at LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING t.task_id, t.team, t.routine, t.priority, t.created_at, t.run_at, t.expires_at,
              t.idempotency_key,
              coalesce(t.payload, (SELECT p.payload FROM task_payloads p
                                    WHERE p.task_id = t.task_id)) AS payload
    """
)


@dataclass
class Releaser:
    settings: Settings
    _: KW_ONLY
    engine: Engine
    producer: Producer
    _failed: list[str] = field(default_factory=list, init=False)

    @property
    def lookahead(self) -> timedelta:
        return timedelta(seconds=self.settings.schedule_hold_seconds / 2)

    def run(self, stop: threading.Event) -> None:
        log.info("releaser sending scheduled tasks %.0fs before their time", self.lookahead.seconds)
        while not stop.wait(INTERVAL_SECONDS):
            try:
                while self.release() == BATCH and not stop.is_set():
                    pass
            except Exception as exc:  # Postgres or Kafka away: the marks roll back
                log.warning("releaser pass failed: %s", exc)

    def release(self) -> int:
        """Send the parked tasks now due (within the lookahead); returns how many."""
        with self.engine.begin() as conn:
            rows = conn.execute(_DUE, {"until": utcnow() + self.lookahead, "limit": BATCH}).all()
            if not rows:
                return 0
            self._failed = []
            for row in rows:
                request = request_of(row, payload=row.payload, released=True)
                self.producer.produce(
                    self.settings.request_topic(request.team),
                    key=request.task_id.encode(),
                    value=request.encode(),
                    on_delivery=self._delivered,
                )
            left = self.producer.flush(30)
            if left or self._failed:
                # Raised inside the transaction: the marks roll back, the next pass
                # sends them again.
                raise RuntimeError(
                    f"{left or len(self._failed)} released requests not acknowledged by Kafka"
                )
        metrics.RELEASED.inc(len(rows))
        log.info("released %d scheduled tasks", len(rows))
        return len(rows)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(err.str())
