"""The bridge's priority scheduler: which waiting task goes to a Celery queue next.

Pure logic, no I/O. Tasks wait here, not in Celery, until workers have room; then:
- priorities share the room by smooth weighted round-robin (nginx's algorithm): with
  weights 6/3/1 every ten picks made while all three wait hold six high, three medium
  and one low, interleaved; a priority with nothing waiting gives its turn away, so no
  worker idles while work waits, and low is never starved;
- within a priority, teams take turns, so one team's flood does not stall another's;
- a delayed task (staggered, or a retry's backoff) waits in a heap until its time;
- the bridge gives a newcomer whose priority has nothing waiting here a fast lane
  (see bridge.service), which is why `waiting(queue)` is public.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from core.priority import Priority

T = TypeVar("T")


@dataclass
class Waiting(Generic[T]):
    """A task waiting for dispatch; `item` is whatever the caller needs to send it."""

    item: T
    queue: Priority
    team: str
    release_at: float = 0.0  # monotonic-clock seconds; 0: now
    partition_key: object = None  # lets a rebalance drop what is no longer ours


@dataclass
class _Lane:
    """The tasks of one priority: a queue per team, and the teams' turn order."""

    teams: dict[str, deque[Waiting]] = field(default_factory=dict)
    turn: deque[str] = field(default_factory=deque)
    size: int = 0

    def push(self, waiting: Waiting) -> None:
        backlog = self.teams.get(waiting.team)
        if backlog is None:
            backlog = self.teams[waiting.team] = deque()
        if not backlog:
            self.turn.append(waiting.team)
        backlog.append(waiting)
        self.size += 1

    def pop(self) -> Waiting:
        team = self.turn.popleft()
        backlog = self.teams[team]
        waiting = backlog.popleft()
        if backlog:
            self.turn.append(team)
        else:
            del self.teams[team]
        self.size -= 1
        return waiting

    def drop(self, keys: set[object]) -> list[Waiting]:
        dropped: list[Waiting] = []
        for team in list(self.teams):
            kept = deque(w for w in self.teams[team] if w.partition_key not in keys)
            dropped.extend(w for w in self.teams[team] if w.partition_key in keys)
            if kept:
                self.teams[team] = kept
            else:
                del self.teams[team]
        self.turn = deque(t for t in self.turn if t in self.teams)
        self.size = sum(len(b) for b in self.teams.values())
        return dropped


class PriorityScheduler(Generic[T]):
    def __init__(self, weights: dict[Priority, int]) -> None:
        self.weights = {p: weights[p] for p in Priority.ordered()}
        self.current = {p: 0 for p in Priority.ordered()}
        self.lanes = {p: _Lane() for p in Priority.ordered()}
        self.delayed: list[tuple[float, int, Waiting[T]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self.ready_count + len(self.delayed)

    @property
    def ready_count(self) -> int:
        return sum(lane.size for lane in self.lanes.values())

    def waiting(self, queue: Priority) -> int:
        return self.lanes[queue].size

    def add(self, waiting: Waiting[T], now: float) -> None:
        if waiting.release_at > now:
            heapq.heappush(self.delayed, (waiting.release_at, next(self._seq), waiting))
        else:
            self.lanes[waiting.queue].push(waiting)

    def next_release(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def release_due(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, _, waiting = heapq.heappop(self.delayed)
            self.lanes[waiting.queue].push(waiting)

    def _eligible(self) -> list[Priority]:
        return [p for p in Priority.ordered() if self.lanes[p].size]

    def _next_priority(self) -> Priority | None:
        """Whose turn it is by smooth weighted round-robin (not yet charged): among the
        priorities with tasks ready, the one whose credit plus weight is largest."""
        best: Priority | None = None
        for p in self._eligible():
            if best is None or self.current[p] + self.weights[p] > (
                self.current[best] + self.weights[best]
            ):
                best = p
        return best

    def _charge(self, taken: Priority) -> None:
        """One round-robin step: every priority with tasks ready gains its weight, and
        the one that took the turn pays the sum."""
        eligible = self._eligible()
        for p in eligible:
            self.current[p] += self.weights[p]
        self.current[taken] -= sum(self.weights[p] for p in eligible)

    def _settle(self) -> None:
        if not self.ready_count:
            # An idle scheduler starts the next busy period from a clean slate.
            for p in self.current:
                self.current[p] = 0

    def peek(self) -> Waiting[T] | None:
        """The task `take(1)` would return, left in place."""
        turn = self._next_priority()
        if turn is None:
            return None
        lane = self.lanes[turn]
        return lane.teams[lane.turn[0]][0]

    def take_like(
        self, first: Waiting[T], limit: int, same: Callable[[T, T], bool]
    ) -> list[Waiting[T]]:
        """`first`'s turn (it must be what `peek` returned), plus up to `limit - 1` more
        tasks of its priority for which `same(first, next)` holds, taken as long as the
        lane's next task matches. Each task taken counts as one turn of that priority,
        so the shares between priorities hold over time."""
        queue = first.queue
        lane = self.lanes[queue]
        taken: list[Waiting[T]] = []
        while lane.size and len(taken) < limit:
            upcoming = lane.teams[lane.turn[0]][0]
            if taken and not same(first.item, upcoming.item):
                break
            self._charge(queue)
            taken.append(lane.pop())
        self._settle()
        return taken

    def take(self, count: int) -> list[Waiting[T]]:
        """Up to `count` ready tasks, in the order they should be dispatched."""
        picked: list[Waiting[T]] = []
        while len(picked) < count:
            turn = self._next_priority()
            if turn is None:
                break
            self._charge(turn)
            picked.append(self.lanes[turn].pop())
        self._settle()
        return picked

    def drop(self, keys: Iterable[object]) -> list[Waiting[T]]:
        """Forget tasks from partitions this bridge no longer owns."""
        wanted = set(keys)
        dropped: list[Waiting[T]] = []
        for lane in self.lanes.values():
            dropped.extend(lane.drop(wanted))
        kept = [entry for entry in self.delayed if entry[2].partition_key not in wanted]
        dropped.extend(entry[2] for entry in self.delayed if entry[2].partition_key in wanted)
        self.delayed = kept
        heapq.heapify(self.delayed)
        return dropped
