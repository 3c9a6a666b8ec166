"""The API's Prometheus metrics. Under gunicorn each worker writes its samples to
PROMETHEUS_MULTIPROC_DIR and /metrics merges them (prometheus-client multiprocess mode)."""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("api_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "api_request_seconds",
    "HTTP request handling time",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SUBMITTED = Counter(
    "api_tasks_accepted_total", "Tasks accepted (202)", ["team", "priority", "routine"]
)

CANCELS = Counter(
    "api_tasks_cancelled_total",
    "Cancels that took effect, by the stage the task was at",
    ["team", "stage"],
)


def install(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        count(route, request.method, response.status_code, g.get("started"))
        return response


def count(route: str, method: str, status: int, started: float | None) -> None:
    """One answered request: `route` as Flask names it, `started` its time.perf_counter()
    when it came in (None: its handling time is not known)."""
    REQUESTS.labels(route, method, str(status)).inc()
    if started is not None:
        LATENCY.labels(route).observe(time.perf_counter() - started)


def exposition() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
