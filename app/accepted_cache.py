"""Tasks accepted in the last few minutes, in Redis, so a GET right after the 202 finds
the task before the recorder has written it to Postgres.

The API writes nothing to Postgres on the way in: the request itself (the bytes it put
on Kafka) is kept here for a short while, with one pipelined round trip per request or
batch. Postgres stays the record; this cache only covers the moments until the
recorder catches up. If Redis is unreachable the request is still accepted (it is
durable in Kafka) and a GET may miss it until the recorder has written it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from core import redis_keys
from core.messages import MalformedMessage, TaskRequest, decode_request

log = logging.getLogger(__name__)

TTL_SECONDS = 300


def _key(task_id: str) -> str:
    return f"{redis_keys.PREFIX}accepted:{task_id}"


class AcceptedCache:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(self, accepted: list[tuple[str, bytes]]) -> None:
        """Keep (task id, encoded request) pairs for TTL_SECONDS; never raises."""
        if not accepted:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for task_id, encoded in accepted:
                pipe.set(_key(task_id), encoded, ex=TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not cache %d accepted tasks: %s", len(accepted), exc)

    def requests(self, task_ids: list[str]) -> dict[str, TaskRequest]:
        """The cached requests among `task_ids`."""
        if not task_ids:
            return {}
        try:
            values = self.redis.mget([_key(t) for t in task_ids])
        except redis.RedisError as exc:
            log.warning("accepted-task cache unavailable: %s", exc)
            return {}
        found = {}
        for task_id, value in zip(task_ids, values, strict=True):
            if value is None:
                continue
            try:
                found[task_id] = decode_request(
                    value if isinstance(value, bytes) else value.encode()
                )
            except MalformedMessage:
                continue
        return found


def as_task_body(request: TaskRequest) -> dict[str, Any]:
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
        "links": {"self": f"/api/v1/tasks/{request.task_id}"},
        "payload": request.payload,
        "timeline": [
            {"status": "ACCEPTED", "at": accepted, "attempt": 0, "queue": None, "detail": None}
        ],
    }
