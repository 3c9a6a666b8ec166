"""Leases: who holds a task right now, kept in Redis with a short expiry.

- The bridge takes a *queued* lease when it puts a task on a Celery queue.
- A worker takes a *running* lease when it starts the task and renews it every few
  seconds while the task runs; it drops the lease when the task ends.
- A lease nobody renews expires. The reconciler treats an unfinished task whose lease is
  gone as lost (its worker died, or the broker lost it) and dispatches it again.

A running lease is never taken over by another holder unless that holder is a process
on this same host that no longer exists (a worker child killed mid-task).
"""

from __future__ import annotations

import os
import socket

import redis

from core import redis_keys, redis_scripts

RUNNING_SECONDS = 10  # a running task is noticed lost this long after its worker died
RENEW_SECONDS = 3
QUEUED_SECONDS = 600  # how long a task may wait on a Celery queue before it counts as lost

# Set the lease unless another holder is running the task; return that holder if so.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 8) == 'running:' and current ~= ARGV[1] then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

# A renewal keeps the lease only where it is still the holder's, or gone (Redis lost its
# data: made again). Another value stands: a retry's "retrying" hand-off, or a new holder.
# (An unconditional SET from the keeper thread, a moment after the run had handed its
# lease on, made the retry's delivery find a live "running" lease and skip itself.)
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def key(task_id: str) -> str:
    return f"{redis_keys.PREFIX}lease:{task_id}"


def running_holder() -> str:
    return f"running:{socket.gethostname()}:{os.getpid()}"


def queued_holder(dispatch: int, retries: int) -> str:
    return f"queued:{dispatch}:{retries}"


def holder_is_dead(holder: str) -> bool:
    """True if `holder` is a running lease of a process on this host that has exited."""
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != "running" or parts[1] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class Leases:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        # What a pipeline that calls `acquire_in` loads when Redis has forgotten it.
        self.scripts = (self._acquire,)

    def acquire_in(
        self, pipe: redis.client.Pipeline, task_id: str, holder: str, seconds: int
    ) -> None:
        """Queue an `acquire` on a pipeline run by `core.redis_scripts.execute` (its reply
        is the holder that kept the lease, or None)."""
        redis_scripts.call(pipe, self._acquire, [key(task_id)], [holder, seconds])

    def renew(self, held: dict[str, str]) -> None:
        """Extend running leases (task id -> holder) for another RUNNING_SECONDS."""
        if not held:
            return

        def fill(pipe: redis.client.Pipeline) -> None:
            for task_id, holder in held.items():
                redis_scripts.call(pipe, self._renew, [key(task_id)], [holder, RUNNING_SECONDS])

        redis_scripts.execute(self.redis, fill, [self._renew])
