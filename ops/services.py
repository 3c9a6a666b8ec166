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

from core import credentials
from core.kafka import make_admin
from core.settings import Settings
from ops import kafka_acl, kafka_node, postgres_node
from ops.credentials import ensure, private_file
from ops.supervisor import ProcessSpec, Supervisor

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

INFRASTRUCTURE = ("kafka", "postgres", "redis")


def is_infrastructure(name: str) -> bool:
    """Kafka (any node of it), Postgres or Redis, started before the platform."""
    return name in INFRASTRUCTURE or group_of(name) == "kafka"


def instance_names(base: str, count: int) -> list[str]:
    """`base` alone, or `base-1` … `base-<count>` when there are several of it."""
    return [base] if count == 1 else [f"{base}-{n}" for n in range(1, count + 1)]


def group_of(name: str) -> str:
    """The kind of component a name is (`bridge-2` -> `bridge`), or the name itself."""
    base, dash, number = name.rpartition("-")
    return base if dash and number.isdigit() else name


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


def _kafka_node_ready(settings: Settings, supervisor: Supervisor, node: int) -> Callable[[], bool]:
    """Node `node` of a cluster serves as a broker: its port is open and the cluster's
    metadata lists it. While fewer nodes run than a quorum needs (the first node of a
    fresh start), it is ready once its controller listens: it waits for its peers, and
    `ensure_topics` waits for the brokers the topics need."""
    _, port, controller_port = settings.kafka_nodes[node - 1]
    names = [kafka_node.node_name(settings, n) for n, _, _ in settings.kafka_nodes]
    quorum = settings.kafka_brokers // 2 + 1
    admin: list[AdminClient] = []

    def probe() -> bool:
        running = sum(supervisor.tracked(name) is not None for name in names)
        if running < quorum:
            return _port_open(controller_port)
        if not _port_open(port):
            return False
        if not admin:
            admin.append(make_admin(settings))
        return node in admin[0].list_topics(timeout=2).brokers

    return probe


def _redis_ready(settings: Settings) -> Callable[[], bool]:
    def probe() -> bool:
        client = redis.Redis(
            host="127.0.0.1",
            port=settings.redis_port,
            password=credentials.read(settings.run_dir, credentials.REDIS),
            socket_timeout=1,
        )
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
    ensure(run_dir, credentials.FLOWER, f"admin:{secrets.token_urlsafe(18)}")
    secret = credentials.read(run_dir, credentials.FLOWER)
    assert secret is not None
    return secret


def redis_config(run_dir: Path) -> Path:
    """The local Redis's configuration file (mode 0600): its password, when the run folder
    has one, never on a command line that every local user can read."""
    path = run_dir.resolve() / "redis" / "redis.conf"
    password = credentials.read(run_dir, credentials.REDIS)
    lines = ["# Written by `make up` (ops/services.py); edits are overwritten."]
    if password is not None:
        lines.append(f'requirepass "{password}"')
    private_file(path, "\n".join(lines) + "\n")
    return path


def kafka_identity(settings: Settings, run_dir: Path, principal: str) -> dict[str, str]:
    """The environment that makes a component `principal` on the local Kafka (SCRAM), when
    that Kafka asks; nothing otherwise (another cluster's settings reach it as they are)."""
    if not settings.local_kafka or not settings.kafka_security_protocol.startswith("SASL"):
        return {}
    password = credentials.read(run_dir, credentials.kafka(principal))
    if password is None:
        return {}
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": principal,
        "KAFKA_SASL_PASSWORD": password,
    }


def infrastructure(settings: Settings, supervisor: Supervisor) -> list[ProcessSpec]:
    run_dir = supervisor.run_dir
    pg_data = postgres_node.data_dir(run_dir)
    redis_dir = run_dir.resolve() / "redis"

    def prepare_postgres() -> None:
        postgres_node.secure_offline(run_dir, postgres_node.init_once(run_dir))

    def prepare_redis() -> None:
        redis_dir.mkdir(parents=True, exist_ok=True)
        redis_config(run_dir)

    return [
        *kafka_nodes(settings, supervisor),
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
                str(redis_dir / "redis.conf"),
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


def kafka_nodes(settings: Settings, supervisor: Supervisor) -> list[ProcessSpec]:
    """One node (`kafka`), or KAFKA_BROKERS nodes (`kafka-1` …), each its own process
    with its own folder, PID file and log."""
    cluster = settings.kafka_brokers > 1
    specs = []
    for node, port, _ in settings.kafka_nodes:
        home = kafka_node.node_home(settings, supervisor.run_dir, node)

        def prepare(home: Path = home, node: int = node) -> None:
            kafka_node.render_config(settings, home, node)
            shared_id = kafka_node.cluster_id(supervisor.run_dir) if cluster else None
            if kafka_node.format_storage_once(home, shared_id, supervisor.run_dir):
                kafka_acl.record_formatted(supervisor.run_dir)

        specs.append(
            ProcessSpec(
                name=kafka_node.node_name(settings, node),
                argv=kafka_node.server_argv(settings, home),
                ready=(
                    _kafka_node_ready(settings, supervisor, node)
                    if cluster
                    else _kafka_ready(settings)
                ),
                port=port,
                before_start=prepare,
                start_timeout=90,
                stop_timeout=30,
            )
        )
    return specs


def platform(settings: Settings, supervisor: Supervisor) -> list[ProcessSpec]:
    """The platform's own processes. Every one writes its metrics where the API's
    /metrics merges them; those without a port say they are ready through a file."""
    python = str(VENV_BIN / "python")
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(supervisor.run_dir))}

    def identity(name: str) -> dict[str, str]:
        return kafka_identity(settings, supervisor.run_dir, group_of(name))

    def module(name: str, argv: list[str], **options: Any) -> ProcessSpec:
        ready_file = supervisor.ready_file(name)
        return ProcessSpec(
            name=name,
            argv=[python, "-m", *argv],
            ready=_file_ready(ready_file),
            env={**metrics, **identity(name), "READY_FILE": str(ready_file.resolve())},
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
                "--no-control-socket", "app.waiting:create_asgi()",
            ],
            ready=_http_ready(settings.api_port, "/healthz"),
            port=settings.api_port,
            env={**metrics, **identity("api")},
            cwd=REPO_ROOT,
        ),
        *(module(name, ["recorder"]) for name in instance_names("recorder", settings.recorders)),
        *(module(name, ["bridge"]) for name in instance_names("bridge", settings.bridges)),
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
