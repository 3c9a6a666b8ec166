"""Kafka helpers: client factories with the platform's settings, and topic creation.

Clients are created by entry points (never at import) and closed by them: producers
with `flush(timeout)`, consumers with `close()`.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from core.settings import ConfigError, Settings

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
        "message.max.bytes": settings.kafka_message_max_bytes,
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
    config = {"max.message.bytes": str(settings.limits.topic_max_message_bytes)}
    to_create = [
        NewTopic(name, num_partitions=count, replication_factor=1, config=config)
        for name, count in wanted.items()
        if name not in existing
    ]
    to_grow = [
        NewPartitions(name, count)
        for name, count in wanted.items()
        if name in existing and len(existing[name].partitions) < count
    ]
    changed = _raise_message_limits(admin, settings, [n for n in wanted if n in existing])
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


def _max_message_bytes(admin: AdminClient, names: list[str], timeout: float) -> dict[str, int]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    if not resources:
        return {}
    found = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = future.result(timeout).get("max.message.bytes")
        found[resource.name] = int(entry.value) if entry is not None and entry.value else 0
    return found


def _raise_message_limits(
    admin: AdminClient, settings: Settings, names: list[str], timeout: float = 30.0
) -> list[str]:
    """Raise `max.message.bytes` of existing platform topics that allow less than the
    platform produces (topics made before KAFKA_MESSAGE_MAX_BYTES grew)."""
    needed = settings.limits.topic_max_message_bytes
    allowed = _max_message_bytes(admin, names, timeout)
    low = [name for name, size in allowed.items() if size < needed]
    if not low:
        return []
    entry = ConfigEntry(
        "max.message.bytes", str(needed), incremental_operation=AlterConfigOpType.SET
    )
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[entry]) for name in low
    ]
    for future in admin.incremental_alter_configs(resources, request_timeout=timeout).values():
        future.result(timeout)
    return low


def check_topic_limits(settings: Settings, *, timeout: float = 30.0) -> None:
    """Raise ConfigError, naming KAFKA_MESSAGE_MAX_BYTES, if a platform topic would refuse
    a message the platform may produce (its real `max.message.bytes` is too small)."""
    needed = settings.limits.topic_max_message_bytes
    allowed = _max_message_bytes(make_admin(settings), list(wanted_topics(settings)), timeout)
    too_small = [f"{name} allows {size}" for name, size in allowed.items() if size < needed]
    if too_small:
        raise ConfigError(
            f"KAFKA_MESSAGE_MAX_BYTES: {settings.kafka_message_max_bytes} (plus "
            f"{needed - settings.kafka_message_max_bytes} bytes of framing) does not fit the "
            f"topics' max.message.bytes: {'; '.join(too_small)}. Raise the topics' "
            "max.message.bytes or lower KAFKA_MESSAGE_MAX_BYTES."
        )
