"""The baseline for the submit benchmark: a bare Flask JSON endpoint, served by gunicorn
with the API's own settings (app.gunicorn_conf), that parses the body and answers 202."""

from __future__ import annotations

import orjson
from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/api/v1/tasks")
    def accept() -> Response:
        body = orjson.loads(request.get_data())
        answer = {"task_id": "00000000-0000-0000-0000-000000000000", "status": "ACCEPTED"}
        answer["team"] = body.get("team")
        return Response(orjson.dumps(answer), status=202, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status": "ok"}', mimetype="application/json")

    return app
