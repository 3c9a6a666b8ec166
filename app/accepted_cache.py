"""Tasks accepted in the last few minutes, in Redis, so a GET right after the 202 finds
the task before the recorder has written it to Postgres (normally within a second).

The API writes nothing to Postgres on the way in: the request itself (the bytes it put
on Kafka) is kept here for a short while, written by the producer's delivery thread with
one pipelined round trip for all the requests acknowledged together. Postgres stays the
record; this cache only covers the moments until the recorder catches up. If Redis is
unreachable the request is still accepted (it is durable in Kafka) and a GET may miss it
until the recorder has written it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from app.models import Task, task_links
from core import redis_keys
from core.messages import MalformedMessage, TaskRequest, decode_request

log = logging.getLogger(__name__)

BUCKET_SECONDS = 10
TTL_SECONDS = 60  # longer than the recorder normally needs to catch up


def _bucket_key(bucket: int) -> str:
    return f"{redis_keys.PREFIX}accepted:{bucket}"


def _bucket(moment: datetime) -> int:
    return int(moment.timestamp()) // BUCKET_SECONDS


def _accepted_bucket(task_id: str) -> int | None:
    """The bucket of a time-ordered (UUIDv7) task id, read from the id's canonical text
    (its first 48 bits are the acceptance time in milliseconds)."""
    if len(task_id) != 36 or task_id[14] != "7":
        return None
    return int(task_id[:8] + task_id[9:13], 16) // 1000 // BUCKET_SECONDS


class AcceptedCache:
    """One Redis hash per ten seconds of acceptances (task id -> encoded request): a
    whole request's tasks are written with one HSET, and each hash expires on its own."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(self, accepted: list[tuple[bytes, bytes]]) -> None:
        """Keep (task id, encoded request) pairs for about TTL_SECONDS, in one round trip;
        never raises. A task's bucket is read from its id (the current one for an
        idempotent id, which carries no time: lookups search every recent bucket)."""
        if not accepted:
            return
        now = _bucket(datetime.now(UTC))
        buckets: dict[int, dict[bytes, bytes]] = {}
        for task_id, request in accepted:
            bucket = _accepted_bucket(task_id.decode())
            buckets.setdefault(now if bucket is None else bucket, {})[task_id] = request
        try:
            pipe = self.redis.pipeline(transaction=False)
            for bucket, mapping in buckets.items():
                key = _bucket_key(bucket)
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(key, TTL_SECONDS + BUCKET_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not cache %d accepted tasks: %s", len(accepted), exc)

    def requests(self, task_ids: list[str]) -> dict[str, TaskRequest]:
        """The cached requests among `task_ids`."""
        if not task_ids:
            return {}
        now = _bucket(datetime.now(UTC))
        recent = [now - back for back in range(TTL_SECONDS // BUCKET_SECONDS + 2)]
        lookups: list[tuple[str, int]] = []
        for task_id in task_ids:
            bucket = _accepted_bucket(task_id)
            # An idempotent (name-based) id carries no time: look in every recent bucket.
            for candidate in [bucket] if bucket is not None else recent:
                lookups.append((task_id, candidate))
        try:
            pipe = self.redis.pipeline(transaction=False)
            for task_id, bucket in lookups:
                pipe.hget(_bucket_key(bucket), task_id)
            values = pipe.execute()
        except redis.RedisError as exc:
            log.warning("accepted-task cache unavailable: %s", exc)
            return {}
        found: dict[str, TaskRequest] = {}
        for (task_id, _), value in zip(lookups, values, strict=True):
            if value is None or task_id in found:
                continue
            try:
                found[task_id] = decode_request(
                    value if isinstance(value, bytes) else value.encode()
                )
            except MalformedMessage:
                continue
        return found


def as_task_body(request: TaskRequest) -> Task:
    """The GET /api/v1/tasks/<id> body of a task only just accepted."""
    accepted = request.accepted_at.isoformat()
    return {
        "task_id": request.task_id,
        "team": request.team,
        "routine": request.routine,
        "priority": request.priority.value,
        "queue": None,
        "status": "ACCEPTED",
        "attempts": 0,
        "result": None,
        "error": None,
        "created_at": accepted,
        "updated_at": accepted,
        "started_at": None,
        "finished_at": None,
        "run_at": request.run_at.isoformat() if request.run_at else None,
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
        "links": task_links(request.task_id),
        "payload": request.payload,
        "timeline": [
            {"status": "ACCEPTED", "at": accepted, "attempt": 0, "queue": None, "detail": None}
        ],
    }
