"""The peers a team would build instead of the platform, each a Flask app served by
gunicorn with the API's own settings (app.gunicorn_conf, gthread), measured like the API:

- POST /api/v1/tasks: parse the body, Celery `send_task` onto Redis (the plain-Celery
  baseline's database, bench.plain_celery's queue), answer 202 with the task id;
- GET /api/v1/tasks/<id>: one task and its events, in one psycopg query (the events as a
  JSON array built by Postgres), one connection per thread.

No authentication, no validation, no record of the task: what the platform adds is the
difference. PEER_BROKER_URL and PEER_DATABASE_URL say where (bench/http_bench.py sets them).
"""

from __future__ import annotations

import os
import threading
import uuid

import orjson
import psycopg
from celery import Celery
from flask import Flask, Response, request

READ = """
SELECT t.task_id, t.team, t.routine, t.priority, t.queue, t.status, t.attempts, t.payload,
       t.result, t.error, t.created_at, t.started_at, t.finished_at,
       (SELECT coalesce(json_agg(json_build_object(
                 'event_id', e.event_id, 'status', e.status, 'at', e.at,
                 'attempt', e.attempt, 'queue', e.queue, 'detail', e.detail)
               ORDER BY e.at), '[]')
          FROM task_events e WHERE e.task_id = t.task_id) AS timeline
  FROM tasks t WHERE t.task_id = %s
"""
COLUMNS = ("task_id", "team", "routine", "priority", "queue", "status", "attempts", "payload",
           "result", "error", "created_at", "started_at", "finished_at", "timeline")  # fmt: skip


def create_app() -> Flask:
    app = Flask(__name__)
    celery = Celery("peer", broker=os.environ["PEER_BROKER_URL"])
    celery.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    database = os.environ["PEER_DATABASE_URL"]
    local = threading.local()

    @app.post("/api/v1/tasks")
    def submit() -> Response:
        body = orjson.loads(request.get_data())
        task_id = str(uuid.uuid4())
        celery.send_task("noop", kwargs={"body": body}, task_id=task_id, queue="peer")
        answer = {"task_id": task_id, "status": "PENDING"}
        return Response(orjson.dumps(answer), status=202, mimetype="application/json")

    @app.get("/api/v1/tasks/<task_id>")
    def read(task_id: str) -> Response:
        if getattr(local, "conn", None) is None:
            local.conn = psycopg.connect(database, autocommit=True)
        row = local.conn.execute(READ, [task_id], prepare=True).fetchone()
        if row is None:
            return Response(b'{"error": "not found"}', status=404, mimetype="application/json")
        return Response(
            orjson.dumps(dict(zip(COLUMNS, row, strict=True))), mimetype="application/json"
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status": "ok"}', mimetype="application/json")

    return app
