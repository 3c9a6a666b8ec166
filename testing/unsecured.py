"""Kafka, Postgres and Redis that ask no one for a password, as `make up` started them
before authentication was turned on: PLAINTEXT Kafka without ACLs, Postgres initialised
with `trust`, Redis without `requirepass`.

Two users: the migration test (a run folder from before, turned over by `make up`) and
`make bench`, which measures the platform on them and on a secured stack started the same
way, to give the cost of authentication. Nothing here is for running a platform: `make up`
always asks.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid

import redis

from core.kafka import make_admin
from core.settings import Settings
from ops import postgres_node, services
from ops.keys import issue_key
from ops.supervisor import ProcessSpec, Supervisor
from testing.instance import PORT_VARIABLES, Instance, free_port, isolated_run_dir, run_ops
from testing.secret_scan import secrets_in_logs

# Where a platform finds its stores: left out of the environment an unsecured instance
# inherits, so that its settings derive them from its own run folder and ports.
CONNECTION_VARIABLES = (
    *PORT_VARIABLES,
    "RUN_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "KAFKA_BOOTSTRAP",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
)

# What initdb --auth=trust wrote (the project's init_once before authentication).
TRUST_HBA = "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"


def start_kafka(settings: Settings, supervisor: Supervisor) -> None:
    """The configured Kafka nodes, PLAINTEXT (the run folder has no Kafka secret)."""
    for spec in services.kafka_nodes(settings, supervisor):
        supervisor.start(spec)
    make_admin(settings).list_topics(timeout=30)


def start_postgres(settings: Settings, supervisor: Supervisor) -> None:
    """Postgres trusting every local connection, with the platform's database."""
    data = postgres_node.init_once(supervisor.run_dir)
    (data / "pg_hba.conf").write_text(TRUST_HBA)
    supervisor.start(
        ProcessSpec(
            name="postgres",
            argv=postgres_node.server_argv(settings, data),
            ready=lambda: postgres_node.is_ready(settings),
            user=postgres_node.run_as(),
            stop_signal=signal.SIGINT,
            start_timeout=60,
        )
    )
    postgres_node.ensure_database(settings)


def start_redis(settings: Settings, supervisor: Supervisor) -> None:
    """Redis as ops/services.py runs it (appendfsync everysec), without a password. (With
    `always`, the bench's 'off' ran end to end at 0.6x of 'on': the fsyncs, not auth.)"""
    (supervisor.run_dir / "redis").mkdir(exist_ok=True)
    supervisor.start(
        ProcessSpec(
            name="redis",
            argv=[
                "redis-server", "--bind", "127.0.0.1", "--port", str(settings.redis_port),
                "--dir", str(supervisor.run_dir.resolve() / "redis"), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
            ],
            ready=lambda: redis.Redis(port=settings.redis_port).ping(),
        )
    )  # fmt: skip


class OwnStackInstance(Instance):
    """A platform instance (API, recorder, bridge, workers) on a Kafka, Postgres and Redis
    of its own, freshly started: with passwords and ACLs as `make up` starts them
    (`secured`), or asking no one (as above). `make bench` measures the platform on one of
    each, the same way, to give what authentication costs."""

    def __init__(self, main: Settings, name: str, *, secured: bool, **env: str) -> None:
        self.name = name
        self.secured = secured
        self.token = f"{name}_{uuid.uuid4().hex[:6]}"
        self.run_dir = isolated_run_dir(self.token)
        self.env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARIABLES}
        self.env.update({variable: str(free_port()) for variable in PORT_VARIABLES})
        self.env.update(
            {
                "RUN_DIR": str(self.run_dir),
                "KAFKA_HEAP": "512m",
                "API_WORKERS": "1",
                "API_THREADS": "8",
                "TOPIC_PARTITIONS": "2",
                "LOG_LEVEL": "INFO",
                **env,
            }
        )
        self.main = main
        self.settings = None
        self._engine = None
        self.admin_key = ""

    def start(self, components: list[str]) -> None:
        if self.secured:
            self.up(["kafka", "postgres", "redis"])  # makes the passwords, ACLs, schema
        else:
            stores = self._load_settings()
            assert stores.kafka_security_protocol == "PLAINTEXT", "the run folder has secrets"
            supervisor = Supervisor(self.run_dir)
            start_kafka(stores, supervisor)
            start_postgres(stores, supervisor)
            start_redis(stores, supervisor)
            migrated = run_ops(self.env, "migrate")
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        self.up(components)
        self.settings = self._load_settings()
        self.admin_key = issue_key(self.env)

    def stop(self) -> None:
        """Stops everything it started (its stores too) and deletes its run folder; fails
        (after that) if a password of its own or its admin key is in any of its logs."""
        run_ops(self.env, "down")
        also = {self.admin_key: "the instance's admin key"} if self.admin_key else {}
        leaked = secrets_in_logs(self.run_dir, also=also)
        if self._engine is not None:
            self._engine.dispose()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        assert leaked == [], "secrets in the instance's logs:\n" + "\n".join(leaked)
