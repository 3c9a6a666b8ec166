"""The routing policy: which Celery queue a request goes to, and when.

One object decides, from the routine's declaration and the requested priority:
- the queue: the requested priority (or the routine's default), capped at the highest
  priority the routine may ask for;
- demotion: a team that sends more than its quota of tasks to one queue within the
  flood window has the excess demoted one level, with the reason in the timeline;
- stagger: work of a staggered (batch) routine below high priority is spread over the
  routine's window instead of landing at once. The delay is derived from the task id,
  so a redelivered request gets the same release time.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.messages import TaskRequest
from core.priority import Priority
from core.settings import RoutineSpec, Settings


class RoutingError(ValueError):
    """A request the policy cannot route; the message says why."""


@dataclass(frozen=True)
class Route:
    queue: Priority
    release_at: datetime | None  # None: dispatch as soon as there is capacity
    detail: dict[str, Any] | None  # why the queue or time differs from what was asked


class FloodCounter:
    """Tasks per (team, queue) over a sliding window, in one-second buckets."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.buckets = max(1, math.ceil(window))
        self.clock = clock
        self.counts: dict[tuple[str, Priority], list[int]] = {}
        self.stamps: dict[tuple[str, Priority], list[int]] = {}

    def add(self, team: str, queue: Priority) -> int:
        """Count one more and return the total within the window, this one included."""
        now = int(self.clock())
        key = (team, queue)
        counts = self.counts.setdefault(key, [0] * self.buckets)
        stamps = self.stamps.setdefault(key, [-1] * self.buckets)
        slot = now % self.buckets
        if stamps[slot] != now:
            stamps[slot] = now
            counts[slot] = 0
        counts[slot] += 1
        return sum(c for c, s in zip(counts, stamps, strict=True) if now - s < self.buckets)


def stagger_fraction(task_id: str) -> float:
    """A stable number in [0, 1) spread evenly over task ids."""
    digest = hashlib.blake2b(task_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class RoutingPolicy:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic):
        self.routines = settings.routine_table
        self.quota = settings.flood_quota
        self.window = settings.flood_window_seconds
        self.flood = FloodCounter(settings.flood_window_seconds, clock)

    def spec(self, routine: str) -> RoutineSpec:
        try:
            return self.routines[routine]
        except KeyError:
            known = ", ".join(sorted(self.routines))
            raise RoutingError(f"unknown routine {routine!r} (known: {known})") from None

    def check(self, routine: str, priority: Priority | None) -> Priority:
        """The priority a request will get; raises RoutingError when it may not ask for it."""
        spec = self.spec(routine)
        wanted = priority or spec.priority
        if wanted.rank < spec.highest_priority.rank:
            raise RoutingError(
                f"routine {routine!r} may ask for {spec.highest_priority} priority at most, "
                f"not {wanted}"
            )
        return wanted

    def route(self, request: TaskRequest) -> Route:
        """Where the request goes, and when. Only a first delivery counts towards its
        team's flood quota (a retry or a re-dispatch was counted already)."""
        task_id, team, priority = request.task_id, request.team, request.priority
        spec = self.spec(request.routine)
        detail: dict[str, Any] = {}
        queue = priority
        if queue.rank < spec.highest_priority.rank:
            detail["capped_from"] = queue.value
            queue = spec.highest_priority
        quota = self.quota.get(queue)
        if request.is_first_delivery and quota is not None:
            sent = self.flood.add(team, queue)
            if sent > quota and queue is not Priority.lowest():
                demoted = queue.demoted()
                detail["demoted_from"] = queue.value
                detail["reason"] = (
                    f"team {team} sent {sent} {queue} tasks within {self.window:g}s, "
                    f"over its quota of {quota}: demoted to {demoted}"
                )
                queue = demoted
        release_at = None
        if spec.stagger and queue is not Priority.highest():
            offset = stagger_fraction(task_id) * spec.stagger
            release_at = request.accepted_at + timedelta(seconds=offset)
            detail["staggered_by_seconds"] = round(offset, 3)
        return Route(queue=queue, release_at=release_at, detail=detail or None)
