"""Fixtures for the simulator's tests: a stub of the platform's API that counts requests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.openapi import build_spec
from core.settings import Settings

DATASETS = Path(__file__).resolve().parents[2] / "simulator" / "datasets"
SUBMIT = "/api/v1/tasks"


@dataclass
class StubApi:
    """What the stub saw; `url` is where it listens."""

    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    bodies: list[dict[str, object]] = field(default_factory=list)  # of the submits, in order
    cancels: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, task id)
    accepted: dict[str, tuple[float, str]] = field(default_factory=dict)  # id: (time, routine)
    reject_teams: set[str] = field(default_factory=set)
    openapi: dict[str, object] | None = None  # served as /openapi.json if set
    finished_routines: set[str] = field(default_factory=set)  # their cancels are 409s
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def posts(self) -> int:
        with self.lock:
            return sum(1 for method, path in self.requests if method == "POST" and path == SUBMIT)


def _handler(stub: StubApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            with stub.lock:
                stub.requests.append(("GET", self.path))
            if self.path == "/openapi.json" and stub.openapi is not None:
                self._answer(200, stub.openapi)
            elif self.path.startswith("/api/v1/tasks/"):
                now = datetime.now(UTC).isoformat()
                timeline = [
                    {"status": status, "at": now, "attempt": attempt, "queue": "high"}
                    for status, attempt in (
                        ("ACCEPTED", 0),
                        ("QUEUED", 1),
                        ("STARTED", 1),
                        ("SUCCEEDED", 1),
                    )
                ]
                self._answer(200, {"status": "SUCCEEDED", "timeline": timeline})
            else:
                self._answer(200, {"status": "ok", "tasks": []})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append(("POST", self.path))
            if self.path.endswith("/cancel"):
                self._cancel(self.path.split("/")[-2])
                return
            with stub.lock:
                stub.bodies.append(body)
            if body["team"] in stub.reject_teams:
                error = {"code": "validation_error", "message": "team: unknown team"}
                self._answer(422, {"error": {**error, "details": None}})
                return
            task_id = str(uuid.uuid4())
            with stub.lock:
                stub.accepted[task_id] = (time.monotonic(), body["routine"])
            self._answer(
                202,
                {
                    "task_id": task_id,
                    "status": "ACCEPTED",
                    "accepted_at": datetime.now(UTC).isoformat(),
                },
            )

        def _cancel(self, task_id: str) -> None:
            with stub.lock:
                stub.cancels.append((time.monotonic(), task_id))
                known = stub.accepted.get(task_id)
            if known is None:
                error = {"code": "not_found", "message": f"no task {task_id}", "details": None}
                self._answer(404, {"error": error})
            elif known[1] in stub.finished_routines:
                error = {"code": "conflict", "message": "the task already ended"}
                self._answer(409, {"error": {**error, "details": None}, "status": "SUCCEEDED"})
            else:
                self._answer(202, {"task_id": task_id, "status": "CANCELLED", "stage": "QUEUED"})

    return Handler


@pytest.fixture()
def stub_api() -> Iterator[StubApi]:
    """A stand-in for the platform's API on 127.0.0.1: answers /healthz, accepts every
    submit (or rejects the teams in `reject_teams` with 422), answers a cancel 202 (409
    SUCCEEDED for the routines in `finished_routines`, 404 for an unknown task), serves
    the platform's OpenAPI document for the default settings, and reports every task it
    is asked about as SUCCEEDED."""
    stub = StubApi(openapi=build_spec(Settings()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="stub-api", daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join(5)
