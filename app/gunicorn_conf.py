"""gunicorn settings for the API, from the platform settings.

Each worker process runs uvicorn (an asyncio loop) serving `app.waiting:create_asgi()`:
the Flask app runs in a pool of API_THREADS threads, which lets many requests wait on
Kafka's acknowledgement at once while sharing one producer and one group-committing
database writer per process; a `?wait=` request holds no thread while it waits (see
app/waiting.py). The bench's bare Flask baseline runs with these settings on gthread.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from core.logs import configure_logging
from core.settings import load_settings

_settings = load_settings()

bind = f"{_settings.api_host}:{_settings.api_port}"
workers = _settings.api_workers
worker_class = "uvicorn_worker.UvicornWorker"
threads = _settings.api_threads  # the front's thread pool takes it from the settings
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


def _services(worker: Any) -> Any:
    """The platform's clients of this worker (app.services.Services), or None: the
    waiting front holds the Flask app; the bench's bare baseline has none."""
    app = getattr(worker, "wsgi", None)
    flask_app = getattr(app, "flask", app)
    return getattr(flask_app, "extensions", {}).get("taskplatform")


def on_starting(server: Any) -> None:
    # Every waiting request holds a connection: allow as many as the system lets us.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            server.log.warning("cannot raise the open-file limit from %d: %s", soft, exc)


def post_fork(server: Any, worker: Any) -> None:
    configure_logging(_settings, stage="api")


def post_worker_init(worker: Any) -> None:
    # Connect to Kafka and Postgres now, not on the first request.
    services = _services(worker)
    if services is None:
        return  # not the platform's app (the benchmark's bare baseline)
    try:
        services.submission.submitter.producer.list_topics(timeout=5)
        with services.engine.connect():
            pass
    except Exception as exc:  # not fatal: /readyz reports it, requests retry
        worker.log.warning("warm-up: %s", exc)


def worker_exit(server: Any, worker: Any) -> None:
    # Under uvicorn's worker the front closes them at shutdown (it ends by a signal,
    # before this hook); on gthread this hook does.
    services = _services(worker)
    if services is not None:
        services.close()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
