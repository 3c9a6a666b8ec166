"""Kafka helpers: client factories with the platform's settings, and topic creation.

Clients are created by entry points (never at import) and closed by them: producers
with `flush(timeout)`, consumers with `close()`.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from core.settings import Settings

log = logging.getLogger(__name__)


_librdkafka_log = logging.getLogger("librdkafka")


def _log_client_error(err: KafkaError) -> None:
    # librdkafka reports transient broker trouble here; clients reconnect on their own.
    log.warning("kafka client error: %s", err)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer that gives up on a message after the produce timeout."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(settings.kafka_produce_timeout_seconds * 1000),
        "socket.connection.setup.timeout.ms": 3000,
        "socket.nagle.disable": True,  # small messages must not wait for Nagle's algorithm
        "error_cb": _log_client_error,
        "logger": _librdkafka_log,
    }
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer for at-least-once processing: offsets are stored only by the caller,
    after its work is done (`store_offsets`), and committed in the background."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "socket.nagle.disable": True,
        "error_cb": _log_client_error,
        "logger": _librdkafka_log,
    }
    config.update(overrides)
    return Consumer(config)


def make_admin(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "socket.connection.setup.timeout.ms": 3000,
        "log_level": 4,
        "logger": _librdkafka_log,
    }
    return AdminClient(config)


def wanted_topics(settings: Settings) -> dict[str, int]:
    """Every topic the platform uses, with its partition count."""
    topics = {topic: settings.topic_partitions for topic in settings.request_topics}
    topics[settings.status_topic] = settings.topic_partitions
    topics[settings.dlq_topic] = 1
    return topics


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create missing topics and grow ones with too few partitions; idempotent.

    Returns the names of the topics it created or grew. Raises KafkaException on failure.
    """
    admin = make_admin(settings)
    existing = admin.list_topics(timeout=timeout).topics
    wanted = wanted_topics(settings)
    to_create = [
        NewTopic(name, num_partitions=count, replication_factor=1)
        for name, count in wanted.items()
        if name not in existing
    ]
    to_grow = [
        NewPartitions(name, count)
        for name, count in wanted.items()
        if name in existing and len(existing[name].partitions) < count
    ]
    changed: list[str] = []
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout).items():
            try:
                future.result(timeout)
                changed.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    if to_grow:
        for name, future in admin.create_partitions(to_grow, request_timeout=timeout).items():
            future.result(timeout)
            changed.append(name)
    return changed
