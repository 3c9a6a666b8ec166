"""Reads the stream-statistics snapshot and chart history that the recorder keeps in Redis
(keys in core/stream_stats.py). One client per API process, built on first use."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import redis
from flask import current_app

from core.settings import Settings
from core.stream_stats import SNAPSHOT_KEY, history_key

_EXTENSION = "taskplatform.stats_store"
_lock = threading.Lock()


class StatsUnavailable(Exception):
    """Redis cannot be reached, or holds no statistics yet."""


class StatsStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def snapshot(self) -> dict[str, Any]:
        """The latest snapshot; raises StatsUnavailable if there is none or Redis is away."""
        try:
            raw = self.client.get(SNAPSHOT_KEY)
        except redis.RedisError as exc:
            raise StatsUnavailable(f"Redis cannot be reached: {type(exc).__name__}") from None
        if raw is None:
            raise StatsUnavailable("no statistics yet: the recorder has not published any")
        found: dict[str, Any] = orjson.loads(raw)
        return found

    def history(self, scope: str, last: int | None = None) -> list[dict[str, Any]]:
        """The scope's chart points, oldest first (only the `last` ones if given);
        raises StatsUnavailable if Redis is away."""
        start = -last if last else 0
        try:
            raw: list[bytes] = self.client.lrange(history_key(scope), start, -1)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise StatsUnavailable(f"Redis cannot be reached: {type(exc).__name__}") from None
        return [orjson.loads(item) for item in raw]


def stats_store() -> StatsStore:
    """This process's store, built on first use (after gunicorn has forked)."""
    extensions = current_app.extensions
    store = extensions.get(_EXTENSION)
    if store is None:
        with _lock:
            store = extensions.get(_EXTENSION)
            if store is None:
                settings: Settings = current_app.config["SETTINGS"]
                client = redis.Redis.from_url(
                    settings.redis_url, socket_timeout=1, socket_connect_timeout=1
                )
                store = extensions[_EXTENSION] = StatsStore(client)
    return store
