"""The API process's long-lived clients and shared state, each built once on first use
(after gunicorn forks) and closed when the worker exits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from flask import current_app
from sqlalchemy import Engine

from app.accepted_cache import AcceptedCache
from app.auth import KeyStore
from app.cancel import Canceller
from app.kafka_submitter import KafkaSubmitter
from app.rate_limit import RateLimiter
from app.sse import StreamSlots
from app.stats_store import StatsStore
from app.submission import Submission
from core.db import make_engine
from core.routing import RoutingPolicy
from core.settings import Settings

T = TypeVar("T")
# A pooled connection that rested this long is pinged before use; one in steady use is
# not (a round trip as dear as the read itself), and reads try once more on a dead one.
PING_AFTER_IDLE_SECONDS = 1.0


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _lazy(self, name: str, factory: Callable[[], T]) -> T:
        found = self._built.get(name)
        if found is None:
            with self._lock:
                found = self._built.get(name)
                if found is None:
                    found = self._built[name] = factory()
        return found

    @property
    def engine(self) -> Engine:
        # One connection for each thread that may hold one, kept: with fewer, the threads
        # beyond the pool opened and closed a connection per request (overflow), and a
        # SCRAM exchange made that cost more than the query.
        threads = self.settings.api_threads
        return self._lazy(
            "engine",
            lambda: make_engine(
                self.settings,
                pool_size=threads,
                max_overflow=2,
                application="api",
                ping_after_idle=PING_AFTER_IDLE_SECONDS,
            ),
        )

    @property
    def redis(self) -> redis.Redis:
        return self._lazy(
            "redis",
            lambda: redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=1, socket_connect_timeout=1
            ),
        )

    @property
    def keys(self) -> KeyStore:
        return self._lazy("keys", lambda: KeyStore(self.engine))

    @property
    def submission(self) -> Submission:
        return self._lazy("submission", self._build_submission)

    @property
    def canceller(self) -> Canceller:
        def build() -> Canceller:
            submission = self.submission
            return Canceller(
                self.settings, self.engine, self.redis, submission.cache, submission.submitter
            )

        return self._lazy("canceller", build)

    @property
    def stats_store(self) -> StatsStore:
        """The stream statistics the recorder keeps in Redis."""
        return self._lazy("stats_store", lambda: StatsStore(self.redis))

    @property
    def stream_slots(self) -> StreamSlots:
        """This process's live-stream slots: a quarter of API_THREADS, at least one."""
        return self._lazy(
            "stream_slots",
            lambda: StreamSlots(max(1, self.settings.api_threads // 4), self.settings.teams),
        )

    def _build_submission(self) -> Submission:
        cache = AcceptedCache(self.redis)
        return Submission(
            self.settings,
            engine=self.engine,
            submitter=KafkaSubmitter(self.settings, on_durable=cache.record),
            cache=cache,
            policy=RoutingPolicy(self.settings),
            limiter=RateLimiter(self.settings, self.redis),
        )

    def close(self) -> None:
        submission = self._built.get("submission")
        if submission is not None:
            submission.submitter.close()
        engine = self._built.get("engine")
        if engine is not None:
            engine.dispose()


def services() -> Services:
    return current_app.extensions["taskplatform"]
