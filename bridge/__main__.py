"""`python -m bridge`: run one bridge instance (several may share the consumer group)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import redis

from bridge.dispatcher import CeleryDispatcher
from bridge.service import Bridge
from core.celery_app import make_celery
from core.kafka import make_consumer, make_producer
from core.logs import configure_logging
from core.routing import RoutingPolicy
from core.settings import ConfigError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings, stage="bridge")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=10)
    celery = make_celery(settings, "bridge")
    bridge = Bridge(
        settings,
        consumer=make_consumer(settings, f"{settings.consumer_group_prefix}-bridge"),
        # Status events outlive a Kafka restart in the local queue (five minutes).
        producer=make_producer(settings, **{"message.timeout.ms": 300_000}),
        dispatcher=CeleryDispatcher(celery, client),
        policy=RoutingPolicy(settings),
    )
    ready = os.environ.get("READY_FILE")
    try:
        bridge.run(stop, Path(ready) if ready else None)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
