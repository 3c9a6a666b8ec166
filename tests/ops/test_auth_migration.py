"""A run folder from before authentication (Postgres initialised with `trust`, Redis and
Kafka asking nothing, no secrets) is turned over by `make up`, keeping its data:

- while its Kafka, Postgres and Redis still run as they were started, `up` leaves them so
  and says how to turn authentication on (the platform started with them knows no
  password); it makes no secret;
- it refuses to start one of them with a password while platform processes run without;
- after `make down`, `make up` sets the passwords (Postgres in single-user mode, before it
  listens), writes the SCRAM credentials and ACLs into the existing Kafka cluster, and
  every old row, key and message is still there, reachable with the passwords only.
"""

from __future__ import annotations

import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from core import credentials
from core.kafka import client_config, make_admin
from core.settings import Settings
from ops import kafka_acl
from ops.stack import reloaded
from ops.supervisor import ProcessSpec, Supervisor
from testing import unsecured
from tests.faults.harness import isolated_settings
from tests.isolated import isolated_env, isolated_run_dir, ops

pytestmark = [
    pytest.mark.own_stack,
    pytest.mark.stack,
    pytest.mark.slow,
]

INFRA = ("kafka", "postgres", "redis")
ROW, KEY, MESSAGE = "written before", "legacy:key", b"sent before"


@pytest.fixture()
def legacy() -> Iterator[tuple[dict[str, str], Path]]:
    run_dir = isolated_run_dir("auth-migration")
    env = isolated_env(run_dir, provision=False)
    try:
        yield env, run_dir
    finally:
        ops(env, "down")
        shutil.rmtree(run_dir, ignore_errors=True)


def _start_as_before(settings: Settings, supervisor: Supervisor) -> None:
    """Kafka, Postgres and Redis as the earlier `make up` ran them, with some data."""
    unsecured.start_kafka(settings, supervisor)
    admin = make_admin(settings)
    admin.create_topics([NewTopic("legacy", 1, 1)])["legacy"].result(30)
    producer = Producer(client_config(settings))
    producer.produce("legacy", MESSAGE)
    assert producer.flush(30) == 0

    unsecured.start_postgres(settings, supervisor)
    with psycopg.connect(settings.sync_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE legacy (note text)")
        conn.execute("INSERT INTO legacy VALUES (%s)", [ROW])

    unsecured.start_redis(settings, supervisor)
    with redis.Redis(port=settings.redis_port) as client:
        client.set(KEY, ROW)


def test_up_leaves_a_running_stack_alone_then_migrates_it_after_down(
    legacy: tuple[dict[str, str], Path],
) -> None:
    env, run_dir = legacy
    before = isolated_settings(env)
    assert before.kafka_security_protocol == "PLAINTEXT"
    supervisor = Supervisor(run_dir)
    _start_as_before(before, supervisor)
    platform = ProcessSpec(
        name="api", argv=[sys.executable, "-c", "import time; time.sleep(600)"], ready=lambda: True
    )
    supervisor.start(platform)

    # Running as it was: left so, and said so; no secret made.
    again = ops(env, "up", *INFRA, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    for name in INFRA:
        line = next(x for x in again.stdout.splitlines() if x.split()[:1] == [name])
        assert "without a password" in line and "make down" in line, line
    assert not [p.name for p in credentials.folder(run_dir).glob("*password*")]

    # One of them started anew, with a password the running platform does not know: no.
    assert ops(env, "stop", "redis").returncode == 0
    refused = ops(env, "up", "redis", timeout=60)
    assert refused.returncode == 1
    assert "api" in refused.stderr and "make down" in refused.stderr, refused.stderr
    assert credentials.read(run_dir, credentials.REDIS) is None

    # make down, make up: migrated.
    supervisor.stop("api", signal.SIGTERM, 10)
    assert ops(env, "down").returncode == 0
    up = ops(env, "up", *INFRA, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    after = reloaded(before)
    assert after.kafka_security_protocol == "SASL_PLAINTEXT"

    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(before.sync_database_url, connect_timeout=5).close()
    with psycopg.connect(after.sync_database_url) as conn:
        assert conn.execute("SELECT note FROM legacy").fetchall() == [(ROW,)]

    with redis.Redis(port=after.redis_port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.get(KEY)
    with redis.Redis.from_url(after.redis_url) as client:
        assert client.get(KEY) == ROW.encode()

    unauthenticated = Producer(
        {**client_config(before), "message.timeout.ms": 4000, "log_level": 0}
    )
    failed: list[KafkaError | None] = []
    unauthenticated.produce("legacy", b"x", on_delivery=lambda err, msg: failed.append(err))
    unauthenticated.flush(10)
    assert failed and failed[0] is not None
    consumer = Consumer({**client_config(after), "group.id": f"migration-{uuid.uuid4().hex}"})
    try:
        consumer.assign([TopicPartition("legacy", 0, 0)])
        message = None
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == MESSAGE
    finally:
        consumer.close()
    # The components' SCRAM principals now exist in the cluster formatted without them.
    api = {
        **client_config(after),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "api",
        "sasl.password": credentials.read(run_dir, credentials.kafka("api")),
        "log_level": 0,
    }
    delivered: list[KafkaError | None] = []
    producer = Producer(api)
    producer.produce(
        after.request_topic("alpha"), b"as api", on_delivery=lambda e, m: delivered.append(e)
    )
    producer.flush(30)
    assert delivered == [None]

    # And a second `up` changes nothing.
    second = ops(env, "up", *INFRA, timeout=120)
    assert second.returncode == 0 and "started" not in second.stdout, second.stdout
    assert kafka_acl.ensure_users(after, make_admin(after)) == []
