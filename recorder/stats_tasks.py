"""Per-task bookkeeping for stream statistics: which events were seen already, what each
unfinished task has done so far (to measure its wait, run and end-to-end time), what is in
flight, what is scheduled (waiting for its run_at), and each team's most recently active
tasks.

Memory is bounded whatever the load (see `TaskTracker`), and label values are capped per
dimension so a stream of odd names cannot grow the tables.
"""

from __future__ import annotations

import heapq
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
# A task whose furthest status is SCHEDULED waits for its run_at; any later step (QUEUED on)
# puts it in flight.
_SCHEDULED_STEP = progress(Status.SCHEDULED, 0)


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
    step: int = -1  # core.status.progress of its furthest status
    run_at: float | None = None  # a scheduled run's time (epoch seconds)
    keep_until: float = 0.0  # while scheduled: forgotten after this without news
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

    - tasks in flight until `horizon` seconds pass without news of them (the longest
      window plus a margin), at most `max_tasks`;
    - scheduled tasks (SCHEDULED is their furthest status) until `horizon` seconds past
      their run_at or their latest news, whichever is later: they have no news until their
      time. At most `max_scheduled`; past that, the one due soonest is forgotten (its next
      event brings it back, in flight);
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
        max_scheduled: int = 100_000,
        max_event_ids: int = 500_000,
        recent_per_team: int = 20,
    ) -> None:
        self.horizon = horizon
        self.linger = linger
        self.max_tasks = max_tasks
        self.max_scheduled = max_scheduled
        self.recent_per_team = recent_per_team
        self.event_ids: RecentMap[bool] = RecentMap(horizon=linger, max_keys=max_event_ids)
        self.in_flight: Counter[Labels] = Counter()
        self.scheduled: Counter[Labels] = Counter()
        self.recent: dict[str, OrderedDict[str, RecentTask]] = {}
        self.evicted_in_flight = 0  # tasks in flight forgotten after `horizon` without news
        self.evicted_scheduled = 0  # scheduled tasks forgotten (past their time, or the cap)
        self._tasks: OrderedDict[str, _Task] = OrderedDict()  # in flight, oldest news first
        self._waiting: dict[str, _Task] = {}  # scheduled
        # (keep_until, task id) of scheduled tasks, soonest first; entries of tasks that have
        # moved on stay until popped or compacted away.
        self._due: list[tuple[float, str]] = []
        # Finished task id -> the time of its end (to accept only history from before it).
        self._finished: RecentMap[float] = RecentMap(horizon=linger, max_keys=max_tasks)
        self._values: dict[int, set[str]] = {0: set(teams), 1: set(), 2: set()}
        self._labels: dict[tuple[str, str, str], Labels] = {}

    @property
    def tracked(self) -> int:
        """Tasks held in memory (in flight, scheduled and recently finished)."""
        return len(self._tasks) + len(self._waiting) + len(self._finished)

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
        task = self._tasks.get(event.task_id) or self._waiting.get(event.task_id)
        known = task is not None
        if task is None:
            task = _Task(labels, now)
        task.seen = now
        if event.run_at is not None and task.run_at is None:
            task.run_at = event.run_at.timestamp()
        self._timings(task, event, observation)
        if event.status.terminal:
            self._finish(event.task_id, task, now, event.at.timestamp())
            observation.outcome = event.status
        else:
            self._step(event.task_id, task, progress(event.status, event.attempt), known, now)
        return observation

    def _step(self, task_id: str, task: _Task, step: int, known: bool, now: float) -> None:
        """Count an unfinished task by its furthest status: scheduled while that is
        SCHEDULED, in flight otherwise. Older news (out of order) moves nothing back."""
        if known:
            moves = step > task.step and (step == _SCHEDULED_STEP) != (task.step == _SCHEDULED_STEP)
            task.step = max(task.step, step)
            if not moves:
                if task_id in self._tasks:
                    self._tasks.move_to_end(task_id)
                return
            self._untrack(task_id)
        else:
            task.step = step
        if task.step == _SCHEDULED_STEP:
            task.keep_until = max(task.run_at or now, now) + self.horizon
            self._waiting[task_id] = task
            self.scheduled[task.labels] += 1
            heapq.heappush(self._due, (task.keep_until, task_id))
            if len(self._waiting) > self.max_scheduled:
                self._forget_scheduled(float("inf"))
        else:
            self._tasks[task_id] = task
            self.in_flight[task.labels] += 1
            if len(self._tasks) > self.max_tasks:
                self._forget_oldest()

    def _untrack(self, task_id: str) -> None:
        """Stop counting an unfinished task (it ended, or moved between scheduled and in
        flight)."""
        task = self._tasks.pop(task_id, None)
        if task is not None:
            _drop(self.in_flight, task.labels)
            return
        task = self._waiting.pop(task_id, None)
        if task is not None:
            _drop(self.scheduled, task.labels)
            if len(self._due) > 2 * len(self._waiting) + 1024:
                self._compact()

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
            # A scheduled task waits from its run_at: the delay it asked for is not waiting.
            since = max(task.accepted, task.run_at or task.accepted)
            observation.samples.append(("wait", (task.first_started - since) * 1000))
        if event.status.terminal:
            if task.last_started is not None:
                observation.samples.append(("run", (at - task.last_started) * 1000))
            if task.accepted is not None:
                observation.samples.append(("end_to_end", (at - task.accepted) * 1000))

    def _finish(self, task_id: str, task: _Task, now: float, end: float) -> None:
        self._untrack(task_id)
        self._finished.put(task_id, end, now)

    def evict(self, now: float) -> None:
        """Forget tasks in flight without news for `horizon` seconds, and scheduled tasks
        past their `keep_until` (finished ones and event ids age out by themselves)."""
        cutoff = now - self.horizon
        while self._tasks and next(iter(self._tasks.values())).seen < cutoff:
            self._forget_oldest()
        while self._due and self._due[0][0] < now:
            self._forget_scheduled(now)

    def _forget_oldest(self) -> None:
        _, task = self._tasks.popitem(last=False)
        _drop(self.in_flight, task.labels)
        self.evicted_in_flight += 1

    def _forget_scheduled(self, before: float) -> None:
        """Forget the scheduled task with the soonest keep_until, if it is before `before`
        (entries of tasks that moved on are dropped on the way)."""
        while self._due and self._due[0][0] < before:
            keep_until, task_id = heapq.heappop(self._due)
            task = self._waiting.get(task_id)
            if task is not None and task.keep_until == keep_until:
                del self._waiting[task_id]
                _drop(self.scheduled, task.labels)
                self.evicted_scheduled += 1
                return

    def _compact(self) -> None:
        """Rebuild the heap from the scheduled tasks (drops entries of tasks moved on)."""
        self._due = [(task.keep_until, task_id) for task_id, task in self._waiting.items()]
        heapq.heapify(self._due)

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


def _drop(counter: Counter[Labels], labels: Labels) -> None:
    counter[labels] -= 1
    if counter[labels] <= 0:
        del counter[labels]
