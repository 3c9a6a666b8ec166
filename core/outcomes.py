"""A task's outcome, kept in Redis: the one arbiter of how a task ends.

Whoever ends a task (a worker, a cancel, an expiry, the reconciler parking it) keeps its
terminal event under core.redis_keys.outcome *unless one is kept already* (`SET NX GET`),
then announces it. So a task has one outcome even when a cancel races its own end, and
every stage reads the key before its next step: the bridge before it dispatches, a
worker when it claims a delivery and before it sends a retry.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from core import redis_keys


class Outcomes:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def kept(self, task_ids: Iterable[str]) -> dict[str, bytes]:
        """The kept outcome (an encoded terminal event) of each task that has one."""
        ids = list(task_ids)
        if not ids:
            return {}
        values = self.redis.mget([redis_keys.outcome(task_id) for task_id in ids])
        return {
            task_id: value
            for task_id, value in zip(ids, values, strict=True)
            if isinstance(value, bytes)
        }

    def end(self, outcomes: dict[str, bytes], seconds: int) -> dict[str, bytes]:
        """Keep each task's outcome for `seconds` unless it has one already. Returns the
        outcomes that were there before (those tasks had ended: theirs stands)."""
        if not outcomes:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for task_id, outcome in outcomes.items():
            pipe.set(redis_keys.outcome(task_id), outcome, ex=seconds, nx=True, get=True)
        previous = pipe.execute()
        return {
            task_id: value
            for task_id, value in zip(outcomes, previous, strict=True)
            if isinstance(value, bytes)
        }
