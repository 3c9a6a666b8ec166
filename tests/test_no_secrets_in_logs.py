"""No key or password is in any log of the stack.

The test sends keys and the Flower password itself, in every way a client might (right,
wrong, malformed, in the URL), tries Postgres, Redis and Kafka with a wrong password,
follows a task through every stage, and then reads every log (Kafka's own and Postgres'
included) for those and for every password the run folder keeps (core/credentials.py).
It does not need to run last: what it checks is its own traffic (and whatever other tests
sent before it, which it reads too).
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from confluent_kafka import Producer
from sqlalchemy import Engine

from app.auth import create_key
from core import credentials
from core.kafka import client_config
from core.settings import Settings
from ops.services import flower_credentials
from testing.secret_scan import kept_passwords, leaks, log_files
from tests.tasks_db import wait_terminal

pytestmark = pytest.mark.stack


def _send_secrets(stack: Settings, api_url: str, key: str, unknown: str) -> str:
    """Use the key and the Flower password, rightly and wrongly; returns a task id that
    went through every stage."""
    bearer = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, timeout=30) as api:
        submitted = api.post(
            "/api/v1/tasks",
            headers=bearer,
            json={"team": "alpha", "routine": "echo", "payload": {"m": uuid.uuid4().hex}},
        )
        assert submitted.status_code == 202, submitted.text
        task_id: str = submitted.json()["task_id"]
        # Refused: another team's task, an unknown routine (alone and in a batch), a
        # malformed id, a bad query.
        refusals = [
            ("POST", "/api/v1/tasks", {"team": "bravo", "routine": "noop"}, 403),
            ("POST", "/api/v1/tasks", {"team": "alpha", "routine": "nope"}, 422),
            ("POST", "/api/v1/tasks/batch", {"tasks": [{"team": "alpha", "routine": "?"}]}, 202),
            ("GET", "/api/v1/tasks/not-a-task-id", None, 404),
            ("GET", "/api/v1/stats?window=2m", None, 400),
        ]
        for method, path, body, status in refusals:
            response = api.request(method, path, headers=bearer, json=body)
            assert response.status_code == status, (path, response.text)
        with api.stream(
            "GET", "/api/v1/stats/stream", headers=bearer, params={"max_seconds": "1"}
        ) as stream:
            assert stream.status_code == 200
            stream.read()
        for header in (f"Bearer {unknown}", f"Basic {key}", key, f"Bearer {key} {key}"):
            response = api.get("/api/v1/tasks", headers={"Authorization": header})
            assert response.status_code == 401, header
        assert api.get("/api/v1/tasks", params={"key": key}).status_code == 401
        assert api.get("/dashboard", params={"key": key}).status_code == 200
    user, password = flower_credentials(stack, stack.run_dir).split(":", 1)
    flower = f"http://127.0.0.1:{stack.flower_port}/"
    assert httpx.get(flower, auth=(user, password), timeout=30).status_code == 200
    assert httpx.get(flower, auth=(user, password[::-1]), timeout=30).status_code == 401
    return task_id


def _wrong_passwords(stack: Settings, wrong: str) -> None:
    """Postgres, Redis and Kafka each refuse `wrong` (and log the refusal)."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=stack.postgres_port, user="postgres", password=wrong,
            dbname="postgres", connect_timeout=5,
        ).close()  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=stack.redis_port, password=wrong)
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()
    refused: list[object] = []
    producer = Producer(
        {**client_config(stack), "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "api",
         "sasl.password": wrong, "message.timeout.ms": 3000, "log_level": 0}
    )  # fmt: skip
    producer.produce(stack.request_topic("alpha"), b"x", on_delivery=lambda e, m: refused.append(e))
    producer.flush(10)
    assert refused and refused[0] is not None


def test_no_key_or_password_appears_in_any_log(
    stack: Settings, api_url: str, engine: Engine
) -> None:
    key = create_key(engine, team="alpha", admin=False)[1]
    unknown = f"tpk_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    task_id = _send_secrets(stack, api_url, key, unknown)
    kept = kept_passwords(Path(stack.run_dir))
    wrong = secrets.token_urlsafe(24)
    if credentials.REDIS in kept:  # a stack that asks for passwords
        _wrong_passwords(stack, wrong)
    # Through the bridge, a worker and the recorder: each stage has logged what it would.
    assert wait_terminal(engine, [task_id]) == {task_id: "SUCCEEDED"}

    password = flower_credentials(stack, stack.run_dir).split(":", 1)[1]
    logs = log_files(Path(stack.run_dir))
    assert logs, "no log files found"
    secrets_sent = {
        key: "our key",
        unknown: "an unknown key",
        password: "the Flower password",
        wrong: "a wrong password",
        **{value: f"the password in secrets/{name}" for name, value in kept.items()},
    }
    assert leaks(logs, secrets_sent) == []
