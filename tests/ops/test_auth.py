"""Every service of the local stack asks who is calling (issue 16, section 1): each test is
an attack that worked before (Postgres trusted every local connection, Redis and Kafka
asked nothing) and is refused now, on an isolated stack's Kafka, Postgres and Redis as
`make up` starts them."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from core import credentials
from core.kafka import client_config, make_admin
from core.settings import Settings
from ops import kafka_acl
from ops.supervisor import Supervisor
from testing.secret_scan import secrets_in_logs
from tests.faults.harness import isolated_settings
from tests.isolated import isolated_env, isolated_run_dir, ops

pytestmark = [pytest.mark.own_stack, pytest.mark.stack, pytest.mark.slow]

# What each component may do, as the issue and the code say (ops/kafka_acl.py keeps the
# ACLs; this is written out independently of it).
MAY_WRITE = {
    "api": {"requests", "status"},  # status: a cancel publishes CANCELLED (app/cancel.py)
    "bridge": {"status", "dlq"},
    "worker": {"requests", "status", "dlq"},  # requests: a retry
    "recorder": {"requests", "status", "dlq"},  # the releaser and the reconciler
}
MAY_READ = {"api": set(), "bridge": {"requests"}, "worker": set(), "recorder": {"status"}}
TOPIC_KINDS = ("requests", "status", "dlq")


@pytest.fixture(scope="module")
def infra() -> Iterator[Settings]:
    """Kafka, Postgres and Redis of their own, with topics, ACLs and the schema."""
    run_dir = isolated_run_dir("auth")
    env = isolated_env(run_dir)
    try:
        result = ops(env, "up", "kafka", "postgres", "redis", timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        yield isolated_settings(env)
    finally:
        ops(env, "down")
        leaked = secrets_in_logs(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    assert leaked == [], "secrets in the logs of the stack with ACLs:\n" + "\n".join(leaked)


def _secret(settings: Settings, name: str) -> str:
    value = credentials.read(settings.run_dir, name)
    assert value
    return value


def _topic(settings: Settings, kind: str) -> str:
    return {
        "requests": settings.request_topic("alpha"),
        "status": settings.status_topic,
        "dlq": settings.dlq_topic,
    }[kind]


# Postgres.


def _pg(settings: Settings, user: str, password: str | None, dbname: str = "taskplatform") -> Any:
    extra = {} if password is None else {"password": password}
    return psycopg.connect(
        host="127.0.0.1",
        port=settings.postgres_port,
        user=user,
        dbname=dbname,
        connect_timeout=5,
        autocommit=True,
        **extra,
    )


@pytest.mark.parametrize("user", ["postgres", "taskplatform"])
def test_postgres_refuses_a_connection_without_the_password(infra: Settings, user: str) -> None:
    """Before: `psql -h 127.0.0.1 -U postgres` (trust) made any local user a superuser."""
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        _pg(infra, user, None).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _pg(infra, user, "not-the-password").close()


def test_the_platforms_role_is_no_superuser_and_cannot_become_one(infra: Settings) -> None:
    with _pg(infra, "taskplatform", _secret(infra, credentials.POSTGRES)) as conn:
        powers = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert powers == (False, False, False, False, False)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert owner == ("taskplatform",)  # it owns its database: migrations run as it
        tables = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        assert tables.fetchall() == [("taskplatform",)]
        for attack, refusal in [
            ("COPY (SELECT 1) TO PROGRAM 'id'", "pg_execute_server_program"),
            ("CREATE ROLE intruder SUPERUSER LOGIN PASSWORD 'x'", "must be superuser"),
            ("ALTER ROLE taskplatform SUPERUSER", "must be superuser"),
            ("CREATE ROLE intruder LOGIN", "permission denied"),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
                conn.execute(attack)


def test_the_superusers_password_is_for_ops(infra: Settings) -> None:
    with _pg(infra, "postgres", _secret(infra, credentials.POSTGRES_SUPERUSER), "postgres") as c:
        assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'").fetchone() == (
            True,
        )
    assert _secret(infra, credentials.POSTGRES_SUPERUSER) != _secret(infra, credentials.POSTGRES)


# Redis.


def test_redis_refuses_a_client_without_the_password(infra: Settings) -> None:
    """Before: anyone who reached the port could forge outcomes and rate-limit buckets."""
    with socket.create_connection(("127.0.0.1", infra.redis_port), timeout=5) as raw:
        raw.sendall(b"SET tp:outcome:forged SUCCEEDED\r\n")
        assert raw.recv(200).startswith(b"-NOAUTH Authentication required")
    anonymous = redis.Redis(host="127.0.0.1", port=infra.redis_port, socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):  # redis-py's HELLO is refused first
            anonymous.set("tp:outcome:forged", "SUCCEEDED")
    finally:
        anonymous.close()
    wrong = redis.Redis(
        host="127.0.0.1", port=infra.redis_port, password="not-it", socket_timeout=5
    )
    try:
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()
    assert ":***@" not in infra.redis_url and infra.redis_url.startswith("redis://:")
    with redis.Redis.from_url(infra.redis_url) as platform:  # the settings' URL carries it
        assert platform.ping() is True


# Kafka.


def _as(settings: Settings, principal: str | None, password: str | None = None) -> dict[str, Any]:
    """A client config: the principal over SCRAM-SHA-512 (its own password unless
    `password`), or no authentication at all."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0}
    if principal is None:
        return {**config, "security.protocol": "plaintext"}
    return {
        **config,
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": principal,
        "sasl.password": password or _secret(settings, credentials.kafka(principal)),
    }


def _produce(config: dict[str, Any], topic: str, timeout_ms: int = 6000) -> KafkaError | None:
    """Produce one message; its delivery error, or None once the broker has it."""
    errors: list[KafkaError] = []
    producer = Producer(
        {**config, "message.timeout.ms": timeout_ms, "error_cb": errors.append, "acks": "all"}
    )
    delivered: list[KafkaError | None] = []
    producer.produce(
        topic,
        key=b"auth-test",
        value=uuid.uuid4().bytes,
        on_delivery=lambda e, m: delivered.append(e),
    )
    producer.flush(timeout_ms / 1000 + 5)
    assert delivered, f"no delivery report for {topic}"
    return delivered[0]


def _read(config: dict[str, Any], topic: str, group: str) -> KafkaError | None:
    """Fetch partition 0 of `topic` from the start (assigned: no group membership): the
    topic's error, or None (a message or the end of the partition came back). The
    consumer still looks up `group`'s coordinator; a refusal of that is not the answer."""
    consumer = Consumer(
        {**config, "group.id": group, "enable.partition.eof": True, "enable.auto.commit": False}
    )
    try:
        # A topic it may not even describe is refused in the metadata (librdkafka then
        # fetches nothing and says nothing).
        described = consumer.list_topics(topic, timeout=10).topics[topic].error
        if described is not None:
            return described  # type: ignore[no-any-return]
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                return None
            if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                continue
            return error  # type: ignore[no-any-return]
        raise AssertionError(f"no answer reading {topic}")
    finally:
        consumer.close()


def _end(settings: Settings, topic: str) -> int:
    """The partition's end, asked as ops asks (the settings' `admin`, over PLAIN)."""
    consumer = Consumer({**client_config(settings), "group.id": "auth-test-ends"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def test_an_unauthenticated_client_cannot_produce_to_a_request_topic(infra: Settings) -> None:
    topic = infra.request_topic("alpha")
    before = _end(infra, topic)
    error = _produce(_as(infra, None), topic, timeout_ms=5000)
    assert error is not None  # the broker closed every connection that did not authenticate
    assert _end(infra, topic) == before


def test_a_wrong_password_is_refused(infra: Settings) -> None:
    topic = infra.request_topic("alpha")
    before = _end(infra, topic)
    assert _produce(_as(infra, "api", password="not-the-password"), topic, 5000) is not None
    assert _end(infra, topic) == before


@pytest.mark.parametrize("principal", sorted(MAY_WRITE))
@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_each_principal_writes_only_where_it_must(
    infra: Settings, principal: str, kind: str
) -> None:
    error = _produce(_as(infra, principal), _topic(infra, kind))
    if kind in MAY_WRITE[principal]:
        assert error is None, f"{principal} could not write {kind}: {error}"
    else:
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
            f"{principal} writing {kind}: {error}"
        )


@pytest.mark.parametrize("principal", sorted(MAY_READ))
@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_each_principal_reads_only_what_it_must(infra: Settings, principal: str, kind: str) -> None:
    """The API's principal, among others, cannot read tasks.status."""
    group = f"{infra.consumer_group_prefix}-{principal}"  # its own, where it has one
    error = _read(_as(infra, principal), _topic(infra, kind), group)
    if kind in MAY_READ[principal]:
        assert error is None, f"{principal} could not read {kind}: {error}"
    else:
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
            f"{principal} reading {kind}: {error}"
        )


def test_a_consumer_group_is_its_components_alone(infra: Settings) -> None:
    """The worker may not move the offsets of the bridge's group (it could skip requests)."""
    group = f"{infra.consumer_group_prefix}-bridge"
    offsets = [TopicPartition(infra.request_topic("alpha"), 0, 0)]
    for principal, allowed in [("worker", False), ("api", False), ("bridge", True)]:
        admin = AdminClient(_as(infra, principal))
        request = [ConsumerGroupTopicPartitions(group, offsets)]
        future = admin.alter_consumer_group_offsets(request, request_timeout=10)[group]
        if allowed:
            future.result(15)
        else:
            with pytest.raises(KafkaException) as refused:
                future.result(15)
            code = refused.value.args[0].code()
            assert code == KafkaError.GROUP_AUTHORIZATION_FAILED, (principal, refused.value)


def test_a_second_pass_over_the_acls_changes_nothing(infra: Settings) -> None:
    admin = make_admin(infra)
    assert kafka_acl.ensure_users(infra, admin) == []
    assert kafka_acl.ensure_acls(infra, admin) == (0, 0)


# The secrets themselves.


def test_secrets_are_readable_by_their_owner_only_and_on_no_command_line(infra: Settings) -> None:
    run_dir = Path(infra.run_dir)
    folder = credentials.folder(run_dir)
    assert folder.stat().st_mode & 0o777 == 0o700
    names = sorted(path.name for path in folder.iterdir())
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    for name in ("postgres_password", "postgres_superuser_password", "redis_password"):
        assert name in names
    for principal in credentials.KAFKA_PRINCIPALS:
        assert credentials.kafka(principal) in names
    for config in (run_dir / "kafka" / "server.properties", run_dir / "redis" / "redis.conf"):
        assert config.stat().st_mode & 0o777 == 0o600, config
    values = [
        credentials.read(run_dir, path.name) for path in folder.iterdir() if "password" in path.name
    ]
    supervisor = Supervisor(run_dir)
    for name in ("kafka", "postgres", "redis"):
        tracked = supervisor.tracked(name)
        assert tracked is not None
        for pid in supervisor.group_members(tracked.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert not [v for v in values if v and v in cmdline], f"{name}: a password in argv"
