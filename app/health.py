"""Liveness, readiness and metrics."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, request
from sqlalchemy import text

from app.errors import Unauthorized
from app.http import json_response
from app.metrics import exposition
from app.services import services
from core.db import once_more_if_disconnected

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Kafka and Postgres are reachable from this process."""
    checks: dict[str, str] = {}
    try:
        metadata = services().submission.submitter.producer.list_topics(timeout=2)
        checks["kafka"] = "ok" if metadata.brokers else "no broker"
    except Exception as exc:  # the reason goes to the log, not to whoever asks
        log.warning("readiness: Kafka unreachable: %s", exc)
        checks["kafka"] = f"unreachable: {type(exc).__name__}"
    try:

        def ping() -> None:
            with services().engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        once_more_if_disconnected(ping)
        checks["postgres"] = "ok"
    except Exception as exc:
        log.warning("readiness: Postgres unreachable: %s", exc)
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition; with METRICS_TOKEN set, only for `Bearer <token>`."""
    token = services().settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized(
                "/metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return exposition()
