"""Turning API answers and status events into samples, with live counts for the display.

Events may come in any order and more than once; an event of a task the tracker does not
know (not ours, or not yet answered: the follower keeps those) is ignored. A task moves
only forward (core.status.progress): SCHEDULED is a step like QUEUED, and any terminal
status, CANCELLED and EXPIRED included, finishes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from core.status import Status, progress
from simulator.samples import CancelSample, RunRecord, SendSample, TaskSample


@dataclass(frozen=True, slots=True)
class Event:
    """One status transition of one task, as the simulator needs it."""

    event_id: str
    task_id: str
    status: Status
    at: float  # epoch seconds, platform clock
    attempt: int = 0
    queue: str | None = None


class Tracker:
    """Keeps `run` up to date and counts tasks per (priority, current status)."""

    def __init__(self, run: RunRecord):
        self.run = run
        self.counts: Counter[tuple[str, Status]] = Counter()
        self.sent_by: Counter[str] = Counter()  # per priority
        self.rejected: Counter[str] = Counter()  # per priority
        self.cancels: Counter[str] = Counter()  # planned, sent, answered
        self.unfinished = 0
        self._seen: set[str] = set()
        self._level: dict[str, int] = {}  # progress of each task's current status

    def sent(self, sample: SendSample) -> None:
        """Record a request as it leaves."""
        self.run.sends.append(sample)
        self.sent_by[sample.priority] += 1

    def answered(self, sample: SendSample, accepted_at: float | None) -> None:
        """Record the API's answer to `sample`; an accepted task starts being followed."""
        if sample.task_id is None or accepted_at is None:
            self.rejected[sample.priority] += 1
            return
        if sample.task_id in self.run.tasks:
            return  # an idempotent replay of a task we already follow
        # The API computes run_at from the same clock reading it answers as accepted_at;
        # a delay of 0 schedules nothing.
        run_at = accepted_at + sample.delay if sample.delay else None
        due = run_at if run_at is not None else accepted_at
        task = TaskSample(
            task_id=sample.task_id,
            team=sample.team,
            routine=sample.routine,
            priority=sample.priority,
            accepted_at=accepted_at,
            run_at=run_at,
            expires_at=None if sample.max_wait is None else due + sample.max_wait,
        )
        self.run.tasks[task.task_id] = task
        self.counts[(task.priority, task.status)] += 1
        self.unfinished += 1

    def cancel_planned(self, sample: CancelSample) -> None:
        """Record a cancel to send later."""
        self.run.cancels.append(sample)
        self.cancels["planned"] += 1

    def cancel_sent(self, sample: CancelSample) -> None:
        """Record a planned cancel as it leaves (its `sent` set)."""
        self.cancels["sent"] += 1

    def cancel_answered(self, sample: CancelSample) -> None:
        """Record the API's answer to a cancel (its status and fields set)."""
        self.cancels["answered"] += 1

    def apply(self, events: Iterable[Event]) -> None:
        """Apply status events (any order, duplicates allowed) to the tasks they concern."""
        for event in events:
            if event.event_id in self._seen:
                if event.task_id in self.run.tasks:
                    self.run.anomalies.duplicate_events += 1
                continue
            task = self.run.tasks.get(event.task_id)
            if task is not None:
                self._seen.add(event.event_id)
                self._apply(task, event)

    def unfinished_tasks(self) -> list[TaskSample]:
        """The accepted tasks not yet in a terminal status."""
        return [task for task in self.run.tasks.values() if not task.terminal]

    def _apply(self, task: TaskSample, event: Event) -> None:
        anomalies = self.run.anomalies
        if event.status is Status.STARTED:
            task.first_started = min(task.first_started or event.at, event.at)
            task.last_started = max(task.last_started or event.at, event.at)
        task.attempts = max(task.attempts, event.attempt)
        if event.queue:
            task.queue = event.queue
        if task.terminal:
            if event.status.terminal and event.status is not task.status:
                anomalies.conflicting_terminal += 1
            elif not event.status.terminal and task.finished_at and event.at > task.finished_at:
                anomalies.events_after_terminal += 1
            return
        level = progress(event.status, event.attempt)
        if level <= self._level.get(task.task_id, 0):
            return  # an older transition arriving late
        self._level[task.task_id] = level
        if event.status.terminal:
            task.finished_at = event.at
            self.unfinished -= 1
        self.counts[(task.priority, task.status)] -= 1
        task.status = event.status
        self.counts[(task.priority, task.status)] += 1
