"""`python -m recorder`: record the status topic in Postgres."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import redis

from core.db import make_engine
from core.dead_letters import DeadLetters
from core.kafka import check_topic_limits, make_consumer, make_producer
from core.logs import configure_logging
from core.settings import settings_or_exit
from core.task_done import Announcer
from recorder.reconciler import Reconciler
from recorder.releaser import Releaser
from recorder.service import Recorder
from recorder.stats import StreamStats


def main() -> int:
    settings = settings_or_exit()
    configure_logging(settings, stage="recorder")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    engine = make_engine(settings, pool_size=2, application="recorder")
    consumer = make_consumer(settings, f"{settings.consumer_group_prefix}-recorder")
    # The reconciler runs beside the recorder, with clients of its own.
    check_topic_limits(settings)
    producer = make_producer(settings)
    reconciler = Reconciler(
        settings,
        engine=make_engine(settings, pool_size=1, application="reconciler"),
        client=redis.Redis.from_url(settings.redis_url, socket_timeout=5),
        producer=producer,
    )
    threading.Thread(target=reconciler.run, args=(stop,), name="reconciler", daemon=True).start()
    releaser = Releaser(
        settings,
        engine=make_engine(settings, pool_size=1, application="releaser"),
        producer=make_producer(settings),
    )
    threading.Thread(target=releaser.run, args=(stop,), name="releaser", daemon=True).start()
    ready = os.environ.get("READY_FILE")
    try:
        Recorder(
            settings,
            consumer=consumer,
            engine=engine,
            dead_letters=DeadLetters(producer, settings, stage="recorder", stop=stop),
            observers=[StreamStats.from_settings(settings)],
            announcer=Announcer.from_settings(settings),
        ).run(stop, Path(ready) if ready else None)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
