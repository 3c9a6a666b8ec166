"""The Celery configuration shared by the bridge (which sends tasks by name) and the
workers (which run them). Both build their app with `make_celery`; only the workers
register routines on it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from core.priority import Priority
from core.settings import Settings

TASK_NAME_PREFIX = "routine."


def task_name(routine: str) -> str:
    return f"{TASK_NAME_PREFIX}{routine}"


def visibility_timeout(settings: Settings) -> int:
    """How long Redis keeps an unacknowledged task before handing it out again: longer
    than any task may run, so a running task is never delivered twice (celery#4984);
    lost tasks are found sooner by the reconciler's leases."""
    longest = max(spec.hard_timeout for spec in settings.routine_table.values())
    return int(longest * 2 + 300)


def celery_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("tasks", type="direct")
    return {
        "broker_url": settings.celery_broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Workers take from `high` first, then `medium`, then `low`: the bridge keeps
            # these queues short and decides the shares; the worker must not reorder them.
            "queue_order_strategy": "priority",
            "priority_steps": [0],
            "visibility_timeout": visibility_timeout(settings),
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            # No retry_on_timeout: kombu pipelines a producer's publishes (one round trip
            # per bridge step) only when redis-py will not replay a pipeline after a
            # timeout. A timed-out publish raises instead and the bridge sends it again.
            "health_check_interval": 10,
        },
        "task_queues": [Queue(p.value, exchange, routing_key=p.value) for p in Priority.ordered()],
        "task_default_queue": Priority.MEDIUM.value,
        "task_default_exchange": "tasks",
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,  # outcomes travel as status events, not Celery results
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": settings.celery_task_events,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "enable_utc": True,
    }


def make_celery(settings: Settings, name: str) -> Celery:
    # Celery prefers the CELERY_BROKER_URL variable to its configuration; the settings have
    # read it already (and completed it with REDIS_PASSWORD), so theirs must win.
    os.environ.pop("CELERY_BROKER_URL", None)
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
