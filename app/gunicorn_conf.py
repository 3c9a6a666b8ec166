"""gunicorn settings for the API, from the platform settings.

Threads per worker let many requests wait on Kafka's acknowledgement at once while
sharing one producer and one group-committing database writer per process.
"""

from __future__ import annotations

import os
from typing import Any

from core.logs import configure_logging
from core.settings import load_settings

_settings = load_settings()

bind = f"{_settings.api_host}:{_settings.api_port}"
workers = _settings.api_workers
worker_class = "gthread"
threads = _settings.api_threads
backlog = 2048
# Longer than clients' usual idle timeouts, so a pooled connection is not closed under a
# request that is just being sent (which the client sees as a reset).
keepalive = 65
timeout = 30
graceful_timeout = 15
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "taskplatform-api"


def post_fork(server: Any, worker: Any) -> None:
    configure_logging(_settings, stage="api")


def post_worker_init(worker: Any) -> None:
    # Connect to Kafka and Postgres now, not on the first request.
    services = getattr(worker.wsgi, "extensions", {}).get("taskplatform")
    if services is None:
        return  # not the platform's app (the benchmark's bare baseline)
    try:
        services.submission.submitter.producer.list_topics(timeout=5)
        with services.engine.connect():
            pass
    except Exception as exc:  # not fatal: /readyz reports it, requests retry
        worker.log.warning("warm-up: %s", exc)


def worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("taskplatform") if app else None
    if services is not None:
        services.close()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
