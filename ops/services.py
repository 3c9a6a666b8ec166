"""The components of the stack, in start order, with how each starts and shows it is ready."""

from __future__ import annotations

import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka.admin import AdminClient

from core.kafka import make_admin
from core.settings import Settings
from ops import kafka_node, postgres_node
from ops.supervisor import ProcessSpec, Supervisor

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

INFRASTRUCTURE = ("kafka", "postgres", "redis")


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def _kafka_ready(settings: Settings) -> Callable[[], bool]:
    admin: list[AdminClient] = []  # one client for all probes, made once the port is open

    def probe() -> bool:
        if not _port_open(settings.kafka_port):
            return False
        if not admin:
            admin.append(make_admin(settings))
        metadata = admin[0].list_topics(timeout=2)
        return bool(metadata.brokers)

    return probe


def _redis_ready(settings: Settings) -> Callable[[], bool]:
    def probe() -> bool:
        client = redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return probe


def _http_ready(port: int, path: str) -> Callable[[], bool]:
    def probe() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200

    return probe


def _file_ready(path: Path) -> Callable[[], bool]:
    return path.exists


def flower_credentials(settings: Settings, run_dir: Path) -> str:
    """FLOWER_BASIC_AUTH if set, else credentials generated once into the run folder."""
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth.get_secret_value()
    path = run_dir / "secrets" / "flower_basic_auth"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"admin:{secrets.token_urlsafe(18)}\n")
    return path.read_text().strip()


def infrastructure(settings: Settings, supervisor: Supervisor) -> list[ProcessSpec]:
    run_dir = supervisor.run_dir
    kafka_home = run_dir.resolve() / "kafka"
    pg_data = postgres_node.data_dir(run_dir)
    redis_dir = run_dir.resolve() / "redis"

    def prepare_kafka() -> None:
        kafka_node.render_config(settings, kafka_home)
        kafka_node.format_storage_once(kafka_home)

    def prepare_postgres() -> None:
        postgres_node.init_once(run_dir)

    def prepare_redis() -> None:
        redis_dir.mkdir(parents=True, exist_ok=True)

    return [
        ProcessSpec(
            name="kafka",
            argv=kafka_node.server_argv(settings, kafka_home),
            ready=_kafka_ready(settings),
            port=settings.kafka_port,
            before_start=prepare_kafka,
            start_timeout=90,
            stop_timeout=30,
        ),
        ProcessSpec(
            name="postgres",
            argv=postgres_node.server_argv(settings, pg_data),
            ready=lambda: postgres_node.is_ready(settings),
            port=settings.postgres_port,
            user=postgres_node.run_as(),
            stop_signal=signal.SIGINT,  # fast shutdown: roll back clients, checkpoint
            before_start=prepare_postgres,
            start_timeout=60,
        ),
        ProcessSpec(
            name="redis",
            argv=[
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(settings.redis_port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            ready=_redis_ready(settings),
            port=settings.redis_port,
            before_start=prepare_redis,
        ),
    ]


def platform(settings: Settings, supervisor: Supervisor) -> list[ProcessSpec]:
    """The platform's own processes. Every one writes its metrics where the API's
    /metrics merges them; those without a port say they are ready through a file."""
    python = str(VENV_BIN / "python")
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(supervisor.run_dir))}

    def module(name: str, argv: list[str], **options: Any) -> ProcessSpec:
        ready_file = supervisor.ready_file(name)
        return ProcessSpec(
            name=name,
            argv=[python, "-m", *argv],
            ready=_file_ready(ready_file),
            env={**metrics, "READY_FILE": str(ready_file.resolve())},
            cwd=REPO_ROOT,
            **options,
        )

    workers = [
        module(
            f"worker-{index}",
            [
                "tasks", "worker",
                "--hostname", f"worker{index}@%h",
                "--concurrency", str(settings.worker_concurrency),
                "--without-gossip", "--without-mingle",
                "--loglevel", settings.log_level,
            ],
            start_timeout=60,
            stop_timeout=60,  # warm shutdown lets running tasks finish
        )
        for index in range(1, settings.workers + 1)
    ]  # fmt: skip
    return [
        ProcessSpec(
            name="api",
            # No control socket: gunicorn would put it in ~/.gunicorn/, one path shared by
            # every stack on the machine (and unwritable for a user without a home).
            argv=[
                str(VENV_BIN / "gunicorn"), "--config", "python:app.gunicorn_conf",
                "--no-control-socket", "app:create_app()",
            ],
            ready=_http_ready(settings.api_port, "/healthz"),
            port=settings.api_port,
            env=metrics,
            cwd=REPO_ROOT,
        ),
        module("recorder", ["recorder"]),
        module("bridge", ["bridge"]),
        *workers,
        ProcessSpec(
            name="flower",
            argv=[python, "-m", "tasks.flower"],
            ready=_http_ready(settings.flower_port, "/healthcheck"),
            port=settings.flower_port,
            env={
                **metrics,
                "FLOWER_BASIC_AUTH": flower_credentials(settings, supervisor.run_dir),
            },
            cwd=REPO_ROOT,
        ),
    ]  # fmt: skip


def metrics_dir(run_dir: Path) -> Path:
    return run_dir.resolve() / "metrics"
