"""The baseline for the end-to-end benchmark: plain Celery, one no-op task, on the same
Redis (its own database), with the same worker concurrency and prefork pool.

The task counts itself in Redis (one INCR) so the benchmark knows when all ran; nothing
else: no status tracking, no Kafka, no Postgres. `stamp` records how long after it was
sent it started (the baseline of the platform's wait), acknowledged late like the
platform's tasks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals

BROKER = os.environ.get("PLAIN_BROKER_URL", "redis://127.0.0.1:6379/14")
COUNTER = "plainbench:done"
WAITS = "plainbench:waits_ms"

app = Celery("plainbench", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="plain",
)
_client: list[redis.Redis] = []


def _redis() -> redis.Redis:
    """This pool process's client, made on first use (after the fork)."""
    if not _client:
        _client.append(redis.Redis.from_url(BROKER))
    return _client[0]


@app.task(name="plain.noop")
def noop() -> None:
    _redis().incr(COUNTER)


@app.task(name="plain.stamp", acks_late=True)
def stamp(sent: float) -> None:
    started = time.time()
    _redis().rpush(WAITS, (started - sent) * 1000)


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    ready = os.environ.get("READY_FILE")
    if ready:
        Path(ready).touch()
