"""`python -m bridge`: run one bridge instance (several may share the consumer group).

`python -m bridge replay [--team T] [--reason TEXT] [--dry-run]` re-injects dead letters.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import redis

from bridge.dispatcher import CeleryDispatcher
from bridge.replay import replay
from bridge.service import Bridge, record_consumer_lag
from core.celery_app import make_celery
from core.kafka import check_topic_limits, make_consumer, make_producer
from core.logs import configure_logging
from core.routing import RoutingPolicy
from core.settings import Settings, settings_or_exit


def run_bridge(settings: Settings) -> int:
    configure_logging(settings, stage="bridge")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    check_topic_limits(settings)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=10)
    celery = make_celery(settings, "bridge")
    bridge = Bridge(
        settings,
        consumer=make_consumer(
            settings,
            f"{settings.consumer_group_prefix}-bridge",
            **{"statistics.interval.ms": 5000, "stats_cb": record_consumer_lag},
        ),
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


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    report = replay(settings, team=args.team, reason=args.reason, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(report.replayed)} dead letters as new tasks")
    for old, new in report.replayed:
        print(f"  {old} -> {new}")
    for why, count in report.unreadable.items():
        print(f"  not replayable ({count}): {why}")
    if report.filtered_out:
        print(f"  left alone by the filters: {report.filtered_out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge")
    sub = parser.add_subparsers(dest="command")
    again = sub.add_parser("replay", help="re-inject dead letters as new tasks")
    again.add_argument("--team", help="only this team's dead letters")
    again.add_argument("--reason", help="only dead letters whose reason contains this text")
    again.add_argument("--dry-run", action="store_true", help="list, send nothing")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    if args.command == "replay":
        return run_replay(settings, args)
    return run_bridge(settings)


if __name__ == "__main__":
    sys.exit(main())
