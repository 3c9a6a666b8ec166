"""Who may do what on the local Kafka: one SCRAM principal per kind of component, and ACLs
(KRaft's StandardAuthorizer) that allow each only what its code does. `admin`, the
brokers' own principal, is a super user (ops/kafka_node.py) and needs none.

| principal | reads (its consumer group) | writes |
|---|---|---|
| api | — | request topics; status (a cancel publishes CANCELLED, app/cancel.py) |
| bridge | request topics (`<prefix>-bridge`) | status, dead letters |
| worker | — | status, dead letters, request topics (a retry is a new request) |
| recorder | status (`<prefix>-recorder`) | request topics, status, dead letters (reconciler) |

The bridge and the recorder also describe the platform topics' configurations (they check
`max.message.bytes` at start, core/kafka.py check_topic_limits).

`ensure(settings)` (run by `ops up` and `ops migrate` on the local stack) makes the
principals' SCRAM credentials match the run folder and the ACLs match this table:
missing ones are created, and ACLs of these principals that the table no longer has (a
team removed) are deleted. Idempotent; a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import Future
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from core import credentials
from core.kafka import make_admin, wanted_topics
from core.settings import Settings
from ops.credentials import private_file

log = logging.getLogger(__name__)

TIMEOUT = 30.0
ITERATIONS = 8192  # SCRAM's salted hash iterations (Kafka's minimum is 4096)
# In the secrets folder: a digest of each password last written into the cluster's metadata.
APPLIED = "kafka_scram_applied.json"

Grant = tuple[ResourceType, str, AclOperation]


def grants(settings: Settings) -> dict[str, set[Grant]]:
    """What each component's principal is allowed, LITERAL resources only (a prefix would
    let `tasks.` cover tasks.status and tasks.dlq too)."""
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    read, write = AclOperation.READ, AclOperation.WRITE
    requests = settings.request_topics
    status, dlq = settings.status_topic, settings.dlq_topic
    prefix = settings.consumer_group_prefix
    describe_configs = {
        (topic, name, AclOperation.DESCRIBE_CONFIGS) for name in wanted_topics(settings)
    }
    return {
        "api": {*((topic, t, write) for t in requests), (topic, status, write)},
        "bridge": {
            *((topic, t, read) for t in requests),
            (group, f"{prefix}-bridge", read),
            (topic, status, write),
            (topic, dlq, write),
            *describe_configs,
        },
        "worker": {
            *((topic, t, write) for t in requests),
            (topic, status, write),
            (topic, dlq, write),
        },
        "recorder": {
            (topic, status, read),
            (group, f"{prefix}-recorder", read),
            *((topic, t, write) for t in requests),
            (topic, status, write),
            (topic, dlq, write),
            *describe_configs,
        },
    }


def _binding(principal: str, grant: Grant) -> AclBinding:
    restype, name, operation = grant
    return AclBinding(
        restype,
        name,
        ResourcePatternType.LITERAL,
        f"User:{principal}",
        "*",
        operation,
        AclPermissionType.ALLOW,
    )


def _grant_of(binding: AclBinding) -> Grant | None:
    """The grant an existing ACL is, if it is one this module could have made."""
    if (
        binding.resource_pattern_type != ResourcePatternType.LITERAL
        or binding.host != "*"
        or binding.permission_type != AclPermissionType.ALLOW
    ):
        return None
    return (ResourceType(binding.restype), binding.name, AclOperation(binding.operation))


def ensure_acls(settings: Settings, admin: AdminClient) -> tuple[int, int]:
    """Make every principal's ACLs what `grants` says; returns (created, deleted)."""
    created = deleted = 0
    for principal, wanted in grants(settings).items():
        matching = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]  # None: any name
            ResourcePatternType.ANY,
            f"User:{principal}",
            None,  # type: ignore[arg-type]  # any host
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        existing = admin.describe_acls(matching, request_timeout=TIMEOUT).result(TIMEOUT)
        have = {_grant_of(binding): binding for binding in existing}
        missing = [_binding(principal, grant) for grant in sorted(wanted - set(have), key=str)]
        extra = [binding for grant, binding in have.items() if grant not in wanted]
        if missing:
            for future in admin.create_acls(missing, request_timeout=TIMEOUT).values():
                future.result(TIMEOUT)
            created += len(missing)
        if extra:
            filters = [
                AclBindingFilter(
                    b.restype,
                    b.name,
                    b.resource_pattern_type,
                    b.principal,
                    b.host,
                    b.operation,
                    b.permission_type,
                )
                for b in extra
            ]
            for future in admin.delete_acls(filters, request_timeout=TIMEOUT).values():
                future.result(TIMEOUT)
            deleted += len(extra)
    return created, deleted


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def ensure_users(settings: Settings, admin: AdminClient) -> list[str]:
    """Write the SCRAM-SHA-512 credentials of every component whose password in the run
    folder is not the one last written (a cluster formatted before authentication, or a
    password made anew); returns their names."""
    run_dir = settings.run_dir
    path = credentials.folder(run_dir) / APPLIED
    try:
        applied: dict[str, str] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        applied = {}
    every_user = admin.describe_user_scram_credentials(request_timeout=TIMEOUT)
    assert isinstance(every_user, Future)  # asked for every user: one future, one dict
    described = every_user.result(TIMEOUT)
    known = {
        user
        for user, description in described.items()
        if any(
            info.mechanism == ScramMechanism.SCRAM_SHA_512
            for info in description.scram_credential_infos
        )
    }
    passwords = {
        principal: credentials.read(run_dir, credentials.kafka(principal))
        for principal in credentials.KAFKA_PRINCIPALS
    }
    stale = [
        principal
        for principal, password in passwords.items()
        if password is not None
        and (principal not in known or applied.get(principal) != _digest(password))
    ]
    if stale:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(p, info, str(passwords[p]).encode()) for p in stale
        ]
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=TIMEOUT).values():
            future.result(TIMEOUT)
    record = {p: _digest(pw) for p, pw in passwords.items() if pw is not None}
    if record != applied:
        private_file(path, json.dumps(record, sort_keys=True) + "\n")
    return stale


def record_formatted(run_dir: Path) -> None:
    """Say that the cluster was just formatted with the run folder's passwords."""
    record = {}
    for principal in credentials.KAFKA_PRINCIPALS:
        password = credentials.read(run_dir, credentials.kafka(principal))
        if password is not None:
            record[principal] = _digest(password)
    if not record:  # formatted without authentication
        return
    private_file(credentials.folder(run_dir) / APPLIED, json.dumps(record, sort_keys=True) + "\n")


def ensure(settings: Settings) -> None:
    """SCRAM credentials and ACLs of the local stack's principals, when its Kafka asks
    who is calling. Raises KafkaException (confluent_kafka) if the cluster refuses."""
    if not settings.local_kafka or not settings.kafka_security_protocol.startswith("SASL"):
        return
    admin = make_admin(settings)
    users = ensure_users(settings, admin)
    created, deleted = ensure_acls(settings, admin)
    if users or created or deleted:
        log.info(
            "kafka principals: %d credentials written, %d ACLs created, %d deleted",
            len(users),
            created,
            deleted,
        )
