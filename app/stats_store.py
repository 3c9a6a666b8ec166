"""Reads the stream-statistics snapshot and chart history that the recorder keeps in Redis
(keys in core/stream_stats.py). One store per API process, held by `Services`."""

from __future__ import annotations

import orjson
import redis

from core.stats_shape import ChartPoint, Snapshot
from core.stream_stats import SNAPSHOT_KEY, history_key


class StatsUnavailable(Exception):
    """Redis cannot be reached, or holds no statistics yet."""


class StatsStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def snapshot(self) -> Snapshot:
        """The latest snapshot; raises StatsUnavailable if there is none or Redis is away."""
        try:
            raw = self.client.get(SNAPSHOT_KEY)
        except redis.RedisError as exc:
            raise StatsUnavailable(f"Redis cannot be reached: {type(exc).__name__}") from None
        if raw is None:
            raise StatsUnavailable("no statistics yet: the recorder has not published any")
        found: Snapshot = orjson.loads(raw)
        return found

    def history(self, scope: str, last: int | None = None) -> list[ChartPoint]:
        """The scope's chart points, oldest first (only the `last` ones if given);
        raises StatsUnavailable if Redis is away."""
        start = -last if last else 0
        try:
            raw: list[bytes] = self.client.lrange(history_key(scope), start, -1)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise StatsUnavailable(f"Redis cannot be reached: {type(exc).__name__}") from None
        return [orjson.loads(item) for item in raw]
