"""The real services answer: Kafka round trip with acks=all, Alembic both ways, Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic
from sqlalchemy import create_engine, inspect

from core.kafka import client_config, make_admin, make_producer
from core.settings import Settings
from ops.postgres_node import admin_dsn
from ops.stack import downgrade_schema, upgrade_schema
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture()
def scratch_topic(stack: Settings) -> Iterator[str]:
    admin = make_admin(stack)
    name = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def test_kafka_produce_consume_round_trip_with_acks_all(
    stack: Settings, scratch_topic: str
) -> None:
    producer = make_producer(stack)
    assert producer.list_topics(timeout=10).brokers
    delivered: list[object] = []
    producer.produce(
        scratch_topic, key=b"k", value=b"hello", on_delivery=lambda err, msg: delivered.append(err)
    )
    assert producer.flush(30) == 0
    assert delivered == [None]

    consumer = Consumer({**client_config(stack), "group.id": f"test-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(scratch_topic, 0, 0)])
    try:
        message = wait_for(lambda: consumer.poll(0.5), timeout=30, what="the message back")
        assert message.error() is None
        assert (message.key(), message.value()) == (b"k", b"hello")
    finally:
        consumer.close()


def test_alembic_downgrade_to_base_then_upgrade_to_head(stack: Settings) -> None:
    scratch = f"migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn(stack), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {scratch} OWNER taskplatform")
    url = stack.database_url.rsplit("/", 1)[0] + f"/{scratch}"
    settings = stack.model_copy(update={"database_url": url})
    engine = create_engine(url)
    try:
        upgrade_schema(settings)
        assert {"tasks", "task_events", "api_keys"} <= set(inspect(engine).get_table_names())
        downgrade_schema(settings, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade_schema(settings)
        tables = set(inspect(engine).get_table_names())
        assert {"tasks", "task_events", "api_keys"} <= tables
        indexes = {i["name"] for i in inspect(engine).get_indexes("task_events")}
        assert "task_events_one_terminal" in indexes
    finally:
        engine.dispose()
        with psycopg.connect(admin_dsn(stack), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {scratch} WITH (FORCE)")


def test_main_database_is_at_head(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    from alembic.script import ScriptDirectory

    from ops.stack import alembic_config

    head = ScriptDirectory.from_config(alembic_config(Settings())).get_current_head()
    assert version == head


def test_redis_answers(stack: Settings) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert client.ping() is True
        key = f"test:{uuid.uuid4()}"
        client.set(key, "v", ex=10)
        assert client.get(key) == b"v"
    finally:
        client.close()
