"""Per-task bookkeeping for stream statistics: which events were seen already, what each
unfinished task has done so far (to measure its wait, run and end-to-end time), what is in
flight, and each team's most recently active tasks.

Memory is bounded whatever the load (see `TaskTracker`), and label values are capped per
dimension so a stream of odd names cannot grow the tables.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from core import stats_shape
from core.messages import StatusEvent
from core.status import Status, progress

V = TypeVar("V")
# (team, priority, routine)
Labels = tuple[str, str, str]
OTHER = "(other)"
MAX_VALUES_PER_LABEL = 64
MAX_LABEL_SETS = 4096  # cached (team, priority, routine) combinations


class RecentMap(Generic[V]):
    """Remembers string keys for about `horizon` seconds (at most `max_keys` of them), in a
    few generations of dicts keyed by the key's hash: no per-entry bookkeeping, and the
    oldest generation is dropped whole."""

    def __init__(self, *, horizon: float, max_keys: int, generations: int = 4) -> None:
        self._span = horizon / generations
        self._per_generation = max(1, max_keys // generations)
        self._generations: list[dict[int, V]] = [{} for _ in range(generations)]
        self._started = float("-inf")

    def get(self, key: str) -> V | None:
        # The process-local str hash is 64 bits: collisions are negligible at this size.
        digest = hash(key)
        for generation in self._generations:
            found = generation.get(digest)
            if found is not None:
                return found
        return None

    def put(self, key: str, value: V, now: float) -> None:
        current = self._generations[-1]
        if now - self._started >= self._span or len(current) >= self._per_generation:
            self._generations.pop(0)
            current = {}
            self._generations.append(current)
            self._started = now
        current[hash(key)] = value

    def __len__(self) -> int:
        return sum(len(generation) for generation in self._generations)


@dataclass(slots=True)
class _Task:
    labels: Labels
    seen: float  # arrival time of its latest event
    accepted: float | None = None
    first_started: float | None = None
    waited: bool = False
    last_started: float | None = None
    last_attempt: int = -1


@dataclass(slots=True)
class Observation:
    """What one new event contributes to the statistics."""

    labels: Labels
    status: Status
    outcome: Status | None = None  # set once per task, on its first terminal event
    samples: list[tuple[str, float]] = field(default_factory=list)  # (metric, ms)


@dataclass(slots=True)
class RecentTask:
    task_id: str
    team: str
    routine: str
    priority: str
    status: Status
    at: datetime
    seen: float
    progress: int

    def body(self) -> stats_shape.RecentTask:
        return {
            "task_id": self.task_id,
            "team": self.team,
            "routine": self.routine,
            "priority": self.priority,
            "status": self.status.value,
            "at": self.at.isoformat(),
            "seen": round(self.seen, 3),
        }


class TaskTracker:
    """Turns status events into observations, remembering what it must and no more:

    - unfinished tasks until `horizon` seconds pass without news of them (the longest
      window plus a margin), at most `max_tasks`;
    - finished tasks for `linger` seconds, to recognise their late or repeated events;
    - event ids for `linger` seconds, at most `max_event_ids`.
    """

    def __init__(
        self,
        *,
        teams: list[str],
        horizon: float = 1200.0,
        linger: float = 120.0,
        max_tasks: int = 200_000,
        max_event_ids: int = 500_000,
        recent_per_team: int = 20,
    ) -> None:
        self.horizon = horizon
        self.linger = linger
        self.max_tasks = max_tasks
        self.recent_per_team = recent_per_team
        self.event_ids: RecentMap[bool] = RecentMap(horizon=linger, max_keys=max_event_ids)
        self.in_flight: Counter[Labels] = Counter()
        self.recent: dict[str, OrderedDict[str, RecentTask]] = {}
        self.evicted_in_flight = 0  # unfinished tasks forgotten after `horizon` without news
        self._tasks: OrderedDict[str, _Task] = OrderedDict()  # unfinished, oldest news first
        # Finished task id -> the time of its end (to accept only history from before it).
        self._finished: RecentMap[float] = RecentMap(horizon=linger, max_keys=max_tasks)
        self._values: dict[int, set[str]] = {0: set(teams), 1: set(), 2: set()}
        self._labels: dict[tuple[str, str, str], Labels] = {}

    @property
    def tracked(self) -> int:
        """Tasks held in memory (unfinished and recently finished)."""
        return len(self._tasks) + len(self._finished)

    def observe(self, event: StatusEvent, now: float) -> Observation | None:
        """Account for one event arriving at `now`; None if it was seen before."""
        if self.event_ids.get(event.event_id):
            return None
        self.event_ids.put(event.event_id, True, now)
        raw = (event.team, event.priority, event.routine)
        labels = self._labels.get(raw)
        if labels is None:
            labels = (self._label(0, raw[0]), self._label(1, raw[1]), self._label(2, raw[2]))
            if len(self._labels) < MAX_LABEL_SETS:
                self._labels[raw] = labels
        ended = self._finished.get(event.task_id)
        if ended is not None and (event.status.terminal or event.at.timestamp() > ended):
            # As the recorder does: a second end, or news after the end, is not recorded.
            return None
        self._remember_recent(event, labels, now)
        observation = Observation(labels, event.status)
        if ended is not None:
            return observation  # late-arriving history from before the end
        task = self._tasks.get(event.task_id)
        if task is None:
            task = _Task(labels, now)
            if not event.status.terminal:
                self._tasks[event.task_id] = task
                self.in_flight[labels] += 1
                if len(self._tasks) > self.max_tasks:
                    self._forget_oldest()
        else:
            task.seen = now
            self._tasks.move_to_end(event.task_id)
        self._timings(task, event, observation)
        if event.status.terminal:
            self._finish(event.task_id, task, now, event.at.timestamp())
            observation.outcome = event.status
        return observation

    def _timings(self, task: _Task, event: StatusEvent, observation: Observation) -> None:
        at = event.at.timestamp()
        accepted = event.accepted_at or (event.at if event.status is Status.ACCEPTED else None)
        if accepted is not None and task.accepted is None:
            task.accepted = accepted.timestamp()
        if event.status is Status.STARTED:
            if task.first_started is None:
                task.first_started = at
            if event.attempt >= task.last_attempt:
                task.last_started, task.last_attempt = at, event.attempt
        if not task.waited and task.accepted is not None and task.first_started is not None:
            task.waited = True
            observation.samples.append(("wait", (task.first_started - task.accepted) * 1000))
        if event.status.terminal:
            if task.last_started is not None:
                observation.samples.append(("run", (at - task.last_started) * 1000))
            if task.accepted is not None:
                observation.samples.append(("end_to_end", (at - task.accepted) * 1000))

    def _finish(self, task_id: str, task: _Task, now: float, end: float) -> None:
        if self._tasks.pop(task_id, None) is not None:
            self._drop_in_flight(task.labels)
        self._finished.put(task_id, end, now)

    def _drop_in_flight(self, labels: Labels) -> None:
        self.in_flight[labels] -= 1
        if self.in_flight[labels] <= 0:
            del self.in_flight[labels]

    def evict(self, now: float) -> None:
        """Forget unfinished tasks without news for `horizon` seconds (finished ones and
        event ids age out by themselves)."""
        cutoff = now - self.horizon
        while self._tasks and next(iter(self._tasks.values())).seen < cutoff:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, task = self._tasks.popitem(last=False)
        self._drop_in_flight(task.labels)
        self.evicted_in_flight += 1

    def _label(self, dimension: int, value: str) -> str:
        known = self._values[dimension]
        if value in known:
            return value
        if len(known) >= MAX_VALUES_PER_LABEL:
            return OTHER
        known.add(value)
        return value

    def _remember_recent(self, event: StatusEvent, labels: Labels, now: float) -> None:
        ring = self.recent.setdefault(labels[0], OrderedDict())
        step = progress(event.status, event.attempt)
        entry = ring.get(event.task_id)
        if entry is None:
            entry = ring[event.task_id] = RecentTask(
                task_id=event.task_id,
                team=labels[0],
                routine=labels[2],
                priority=labels[1],
                status=event.status,
                at=event.at,
                seen=now,
                progress=step,
            )
        elif step >= entry.progress:
            entry.status, entry.at, entry.progress = event.status, event.at, step
        entry.seen = now
        ring.move_to_end(event.task_id)
        while len(ring) > self.recent_per_team:
            ring.popitem(last=False)
