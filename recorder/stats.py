"""`StreamStats`: the recorder observer that keeps stream statistics and publishes them.

It feeds every committed batch to a `StreamAggregator` and, at most once a second (from
`on_batch` or `on_idle`), writes the snapshot and one chart point per scope to Redis
(keys in core/stream_stats.py), where the API reads them. Redis trouble is logged once
per outage and retried with backoff; it never reaches the recorder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
import redis

from core.messages import StatusEvent
from core.settings import Settings
from core.stats_shape import ChartPoint, Snapshot
from core.stream_stats import (
    HISTORY_POINTS,
    SNAPSHOT_KEY,
    SNAPSHOT_TTL_SECONDS,
    history_key,
)
from recorder.observers import Observer
from recorder.stats_aggregate import StreamAggregator

log = logging.getLogger(__name__)

PUBLISH_EVERY_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class SnapshotPublisher:
    """Writes a snapshot and the scopes' chart points in one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def publish(self, snapshot: Snapshot, points: dict[str, ChartPoint]) -> None:
        """Raises redis.RedisError if Redis cannot take it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(SNAPSHOT_KEY, orjson.dumps(snapshot), ex=SNAPSHOT_TTL_SECONDS)
        for scope, point in points.items():
            key = history_key(scope)
            pipe.rpush(key, orjson.dumps(point))
            pipe.ltrim(key, -HISTORY_POINTS, -1)
            pipe.expire(key, SNAPSHOT_TTL_SECONDS)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


class StreamStats(Observer):
    def __init__(
        self,
        *,
        aggregator: StreamAggregator,
        publisher: SnapshotPublisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aggregator = aggregator
        self.publisher = publisher
        self.clock = clock
        self._last_publish = float("-inf")
        self._retry_at = float("-inf")
        self._backoff = PUBLISH_EVERY_SECONDS
        self._failing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamStats:
        """An observer for the configured teams, publishing to REDIS_URL (not connected
        until the first publish)."""
        now = time.time()
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        return cls(
            aggregator=StreamAggregator(teams=settings.teams, start=now),
            publisher=SnapshotPublisher(client),
        )

    def on_batch(self, events: list[StatusEvent]) -> None:
        now = self.clock()
        self.aggregator.observe(events, now)
        self._maybe_publish(now)

    def on_idle(self) -> None:
        self._maybe_publish(self.clock())

    def close(self) -> None:
        self.publisher.close()

    def _maybe_publish(self, now: float) -> None:
        if now - self._last_publish < PUBLISH_EVERY_SECONDS:
            return
        self._last_publish = now
        if now < self._retry_at:
            self.aggregator.advance(now)  # keep memory bounded while Redis is away
            return
        snapshot = self.aggregator.snapshot(now)
        points = self.aggregator.chart_points(now)
        try:
            self.publisher.publish(snapshot, points)
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("cannot publish stream statistics to Redis (will retry): %s", exc)
            self._failing = True
            self._retry_at = now + self._backoff
            self._backoff = min(MAX_BACKOFF_SECONDS, self._backoff * 2)
            return
        if self._failing:
            log.info("stream statistics are published to Redis again")
        self._failing = False
        self._backoff = PUBLISH_EVERY_SECONDS
