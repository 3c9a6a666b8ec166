"""Isolated platform instances: a separate set of platform processes (API, recorder,
bridge, workers) on the running stack's Kafka, Postgres and Redis, with their own topics
(a prefix), consumer groups, database, Redis database, API port and run folder.

Tests use them for configurations of their own (one worker slot, extra teams) and for
breaking things (kill -9) without disturbing the main stack; `make bench` uses one so
its measurements run with their own settings.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import psycopg
import redis
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine

from core.db import make_engine
from core.kafka import client_config, make_admin
from core.settings import Settings, load_settings
from ops.keys import issue_key
from ops.postgres_node import admin_dsn
from ops.supervisor import Supervisor
from testing.secret_scan import main_stack_secrets, secrets_in_logs

REPO = Path(__file__).resolve().parent.parent


def isolated_run_dir(name: str) -> Path:
    """A fresh run folder inside the repository's `.run/` (the Postgres service user can
    reach it there, unlike pytest's private temporary folders)."""
    path = REPO / ".run" / "isolated" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ops(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`python -m ops ARGS` with this environment, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def kafka_access(main: Settings) -> dict[str, str]:
    """The environment that lets an instance's processes use the main stack's Kafka: its
    tools' principal (the local stack's `admin`, a super user, since an instance's topics
    and groups have names of their own), or PLAINTEXT on a stack without authentication."""
    env: dict[str, str] = {"KAFKA_SECURITY_PROTOCOL": main.kafka_security_protocol}
    if main.kafka_sasl_password is not None:
        env.update(
            KAFKA_SASL_MECHANISM=main.kafka_sasl_mechanism,
            KAFKA_SASL_USERNAME=main.kafka_sasl_username,
            KAFKA_SASL_PASSWORD=main.kafka_sasl_password.get_secret_value(),
        )
    return env


# The ports a stack of its own moves (tests.isolated, the bench's unsecured instance).
PORT_VARIABLES = (
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "API_PORT",
    "FLOWER_PORT",
)

PLATFORM = ["api", "recorder", "bridge"]
# 14 is the plain-Celery baseline's (bench/pipeline.py); 15 is left free.
REDIS_DATABASES = range(2, 14)


def _claim_redis_db() -> tuple[int, IO[str]]:
    """A Redis database no other instance uses, on this machine, in any process: each is
    claimed by a lock on a file of its own, held until the instance stops (or its process
    ends). Counting from 2 in each process instead made concurrent test runs share one:
    one's worker took the other's Celery messages, and each run flushed it."""
    folder = REPO / ".run" / "isolated"
    folder.mkdir(parents=True, exist_ok=True)
    for db in REDIS_DATABASES:
        handle = (folder / f"redis-db-{db}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return db, handle
    raise RuntimeError(f"every Redis database {REDIS_DATABASES} is claimed by an instance")


class Instance:
    def __init__(self, main: Settings, name: str, **env: str) -> None:
        self.name = name
        self.token = f"{name}_{uuid.uuid4().hex[:6]}"
        self.run_dir = isolated_run_dir(self.token)
        self.database = f"tp_{self.token}"
        redis_db, self._redis_claim = _claim_redis_db()
        self.env = {k: v for k, v in os.environ.items() if k not in ("API_PORT", "RUN_DIR")}
        self.env.update(
            {
                "RUN_DIR": str(self.run_dir),
                "API_PORT": str(free_port()),
                "API_WORKERS": "1",
                "API_THREADS": "8",
                "REQUEST_TOPIC_PREFIX": f"{self.token}.",
                "STATUS_TOPIC": f"{self.token}.status",
                "DLQ_TOPIC": f"{self.token}.dlq",
                "TOPIC_PARTITIONS": "2",
                "CONSUMER_GROUP_PREFIX": self.token,
                "DATABASE_URL": main.database_url.rsplit("/", 1)[0] + f"/{self.database}",
                "REDIS_URL": main.redis_url.rsplit("/", 1)[0] + f"/{redis_db}",
                "KAFKA_BOOTSTRAP": main.kafka_bootstrap,
                **kafka_access(main),
                "LOG_LEVEL": "INFO",
                **env,
            }
        )
        self.main = main
        self.settings: Settings | None = None
        self._engine: Engine | None = None
        self.admin_key = ""

    def _flush_redis(self) -> None:
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            client.flushdb()
        finally:
            client.close()

    def start(self, components: list[str]) -> None:
        self._flush_redis()
        with psycopg.connect(admin_dsn(self.main), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.database} OWNER taskplatform")
        self.up(components)
        self.settings = self._load_settings()
        self.admin_key = issue_key(self.env)

    @contextmanager
    def running(self, components: list[str]) -> Iterator[Instance]:
        """Started with `components`, and stopped (whatever was started) at the end."""
        try:
            self.start(components)
            yield self
        finally:
            self.stop()

    def _load_settings(self) -> Settings:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def up(self, components: list[str]) -> None:
        result = run_ops(self.env, "up", *components)
        assert result.returncode == 0, result.stdout + result.stderr

    def stop_components(self, components: list[str]) -> None:
        result = run_ops(self.env, "stop", *components)
        assert result.returncode == 0, result.stdout + result.stderr

    def restart(self, components: list[str]) -> None:
        result = run_ops(self.env, "restart", *components)
        assert result.returncode == 0, result.stdout + result.stderr

    def wait_bridge_caught_up(self, timeout: float = 60) -> None:
        """Wait until the bridge has committed every request written so far."""
        assert self.settings is not None
        settings = self.settings
        group = f"{settings.consumer_group_prefix}-bridge"
        consumer = Consumer(
            {
                **client_config(settings),
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        try:
            partitions = [
                TopicPartition(topic, number)
                for topic in settings.request_topics
                for number in range(settings.topic_partitions)
            ]
            ends = {
                (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in partitions
            }

            def caught_up() -> bool:
                committed = consumer.committed(partitions, timeout=10)
                return all(
                    ends[(tp.topic, tp.partition)] == 0
                    or tp.offset >= ends[(tp.topic, tp.partition)]
                    for tp in committed
                )

            _wait(caught_up, timeout, "the bridge to commit every request")
        finally:
            consumer.close()

    def pid(self, component: str) -> int:
        """A running component's PID (also its process group)."""
        tracked = Supervisor(self.run_dir).tracked(component)
        assert tracked is not None, f"{component} is not running"
        return tracked.pid

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal a component's whole process group (kill -9 by default); returns its PID."""
        pid = self.pid(component)
        os.killpg(pid, sig)
        return pid

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            assert self.settings is not None
            self._engine = make_engine(self.settings, pool_size=2, application="tests")
        return self._engine

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['API_PORT']}"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=30,
        )

    def log(self, component: str) -> str:
        return (self.run_dir / "logs" / f"{component}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stops its processes, drops its database, topics and Redis data, and deletes its
        run folder; fails (after all that) if a key or password is in any of its logs."""
        run_ops(self.env, "down")
        leaked = secrets_in_logs(
            self.run_dir,
            also={
                **main_stack_secrets(self.main.run_dir),
                **({self.admin_key: "the instance's admin key"} if self.admin_key else {}),
            },
        )
        if self._engine is not None:
            self._engine.dispose()
        with psycopg.connect(admin_dsn(self.main), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        admin = make_admin(self.main)
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(self.token)]
        if topics:
            for future in admin.delete_topics(topics).values():
                future.result(30)
        self._flush_redis()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._redis_claim.close()  # gives the database back
        assert leaked == [], "secrets in the instance's logs:\n" + "\n".join(leaked)
