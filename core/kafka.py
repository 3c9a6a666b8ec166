"""Kafka helpers: client factories with the platform's settings, and topic creation.

Clients are created by entry points (never at import) and closed by them: producers
with `flush(timeout)`, consumers with `close()`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
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


def security_config(settings: Settings) -> dict[str, Any]:
    """How a client proves who it is, and checks the brokers, in librdkafka's words
    (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*)."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL") and settings.kafka_sasl_password is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL"):
        files = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
        }
        config.update({name: value for name, value in files.items() if value})
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def client_config(settings: Settings) -> dict[str, Any]:
    """Where the brokers are and how to prove who we are: the base of every client."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **security_config(settings)}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer that gives up on a message after the produce timeout."""
    config: dict[str, Any] = {
        **client_config(settings),
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
        **client_config(settings),
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
        **client_config(settings),
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
    existing = _enough_brokers(admin, settings, timeout).topics
    wanted = wanted_topics(settings)
    replicas = settings.kafka_replication_factor
    config = {
        "max.message.bytes": str(settings.limits.topic_max_message_bytes),
        "min.insync.replicas": str(settings.kafka_min_insync_replicas),
    }
    to_create = [
        NewTopic(name, num_partitions=count, replication_factor=replicas, config=config)
        for name, count in wanted.items()
        if name not in existing
    ]
    for name in wanted:
        if name in existing:
            copies = min(len(p.replicas) for p in existing[name].partitions.values())
            if copies < replicas:
                log.warning(
                    "topic %s has %d copies of a partition, fewer than KAFKA_REPLICATION_FACTOR "
                    "%d; reassign its partitions (kafka-reassign-partitions) to add copies",
                    name,
                    copies,
                    replicas,
                )
    to_grow = [
        NewPartitions(name, count)
        for name, count in wanted.items()
        if name in existing and len(existing[name].partitions) < count
    ]
    present = [n for n in wanted if n in existing]
    changed = _raise_message_limits(admin, settings, present)
    changed += _set_min_insync(admin, settings, present, timeout)
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout).items():
            try:
                future.result(timeout)
                changed.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        _wait_known(admin, [topic.topic for topic in to_create], timeout)
    if to_grow:
        for name, future in admin.create_partitions(to_grow, request_timeout=timeout).items():
            future.result(timeout)
            changed.append(name)
    return changed


def _enough_brokers(admin: AdminClient, settings: Settings, timeout: float) -> ClusterMetadata:
    """The cluster's metadata once it has the brokers the topics' copies need (a cluster
    just started registers its brokers one by one). Raises KafkaException if it has
    too few after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        if len(metadata.brokers) >= settings.kafka_replication_factor:
            return metadata
        if time.monotonic() > deadline:
            raise KafkaException(
                KafkaError(
                    KafkaError.INVALID_REPLICATION_FACTOR,
                    f"{len(metadata.brokers)} broker(s) available, "
                    f"KAFKA_REPLICATION_FACTOR needs {settings.kafka_replication_factor}",
                )
            )
        time.sleep(0.5)


def _wait_known(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until new topics have a leader for every partition and the brokers answer
    for them (in a cluster, the other brokers learn of a topic a moment after it is made;
    until then they call it unknown)."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        led = all(
            name in topics
            and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        )
        if led:
            try:
                _max_message_bytes(admin, names, timeout)
                return
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        if time.monotonic() > deadline:
            raise KafkaException(
                KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topics not ready: {names}")
            )
        time.sleep(0.2)


def _set_min_insync(
    admin: AdminClient, settings: Settings, names: list[str], timeout: float
) -> list[str]:
    """Give existing platform topics KAFKA_MIN_INSYNC_REPLICAS (never more than their copies)."""
    if not names:
        return []
    wanted = str(settings.kafka_min_insync_replicas)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    found = admin.describe_configs(resources, request_timeout=timeout)
    differ = [
        resource.name
        for resource, future in found.items()
        if (entry := future.result(timeout).get("min.insync.replicas")) is None
        or entry.value != wanted
    ]
    if not differ:
        return []
    entry = ConfigEntry("min.insync.replicas", wanted, incremental_operation=AlterConfigOpType.SET)
    altered = [
        ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[entry])
        for name in differ
    ]
    for future in admin.incremental_alter_configs(altered, request_timeout=timeout).values():
        future.result(timeout)
    return differ


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
