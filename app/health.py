"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import text

from app.http import json_response
from app.metrics import exposition
from app.services import services

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
    except Exception as exc:
        checks["kafka"] = f"unreachable: {exc}"
    try:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


@blueprint.get("/metrics")
def metrics() -> Response:
    return exposition()
