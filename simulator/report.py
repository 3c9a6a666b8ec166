"""The report: a pure function from a run's samples to a JSON-ready dict.

Durations are in milliseconds, as p50/p90/p99/max by the nearest-rank method (a
percentile is always one of the measured values), with the number of values they cover:

- accept latency: the HTTP round trip of each accepted request (includes any wait for a
  pooled connection);
- wait: due (ACCEPTED, or the intended run time of a scheduled task) to the first STARTED;
- run: the last STARTED to the terminal status; end-to-end: due to the terminal status;
  neither counts a task that ended CANCELLED or EXPIRED (the dataset chose that end);
- start lateness (scheduled tasks): the first STARTED minus the intended run time;
- send lateness: when each request left minus when it was scheduled to leave.

Tasks are grouped by the priority they were submitted with (the platform may run them on
another queue; "default" when the request named none). Time series use seconds since the
run's start.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from core.percentiles import summary
from core.priority import Priority
from core.priority import names as priority_names
from core.status import OUTCOMES, TERMINAL, Status
from simulator.samples import CancelSample, RunRecord, SendSample, TaskSample

METRICS = ("accept_latency_ms", "wait_ms", "run_ms", "end_to_end_ms")
MAX_BUCKETS = 240
# Ends that the request chose (cancel_after, expires), not the work: kept out of the run
# and end-to-end durations.
ENDED_BY_REQUEST = frozenset({Status.CANCELLED, Status.EXPIRED})
# Platform times are stored to the microsecond: a start this close to a limit is on it.
CLOCK_SLACK = 0.001


def percentiles(values: Iterable[float], *, scale: float = 1000.0) -> dict[str, Any]:
    """count, p50, p90, p99 and max of `values` times `scale` (seconds to ms by default),
    nearest-rank (core.percentiles), rounded to microseconds; the statistics are None
    when there are no values."""
    measured = list(values)
    found = summary(measured)
    return {"count": len(measured), **{name: _scaled(v, scale) for name, v in found.items()}}


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 3)


def wait_of(task: TaskSample) -> float | None:
    """Seconds from when the task was due (ACCEPTED, or its intended run time) to the
    first STARTED, if it started."""
    return None if task.first_started is None else task.first_started - task.due


def run_of(task: TaskSample) -> float | None:
    """Seconds from the last STARTED to the terminal status, if both happened and the
    task did not end CANCELLED or EXPIRED."""
    if task.last_started is None or task.finished_at is None:
        return None
    if task.status in ENDED_BY_REQUEST:
        return None
    return task.finished_at - task.last_started


def end_to_end_of(task: TaskSample) -> float | None:
    """Seconds from when the task was due to the terminal status, if it finished and did
    not end CANCELLED or EXPIRED."""
    if task.finished_at is None or task.status in ENDED_BY_REQUEST:
        return None
    return task.finished_at - task.due


def start_lateness_of(task: TaskSample) -> float | None:
    """Seconds from a scheduled task's intended run time to its first STARTED (negative:
    it started early), if it was scheduled and started."""
    if task.run_at is None or task.first_started is None:
        return None
    return task.first_started - task.run_at


TASK_METRICS: dict[str, Callable[[TaskSample], float | None]] = {
    "wait_ms": wait_of,
    "run_ms": run_of,
    "end_to_end_ms": end_to_end_of,
}


def build_report(run: RunRecord) -> dict[str, Any]:
    """Everything the report says about `run`; pure, and JSON-serialisable as it is."""
    sends = run.sends
    tasks = list(run.tasks.values())
    answered = [s for s in sends if s.latency is not None]
    accepted = [s for s in answered if s.accepted]
    rejected = [s for s in answered if not s.accepted]
    finished_at = run.finished_at if run.finished_at is not None else run.started_at
    statuses = Counter(task.status for task in tasks)
    return {
        "dataset": run.dataset,
        "description": run.description,
        "speed": run.speed,
        "follow": run.follow,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(finished_at),
        "duration_seconds": round(finished_at - run.started_at, 3),
        "interrupted": run.interrupted,
        "planned": run.planned,
        "sent": len(sends),
        "not_sent": run.planned - len(sends),
        "accepted": len(accepted),
        "rejected": {"count": len(rejected), "reasons": _reasons(rejected)},
        "unanswered": len(sends) - len(answered),
        "terminal": {status.value: statuses[status] for status in OUTCOMES},
        "not_finished": sum(n for status, n in statuses.items() if status not in TERMINAL),
        "not_finished_by_status": {
            status.value: n for status, n in sorted(statuses.items()) if status not in TERMINAL
        },
        "send_lateness_ms": percentiles(s.lateness for s in sends),
        "overall": _group(sends, tasks),
        "by_priority": _grouped(sends, tasks, "priority", priority_names()),
        "by_team": _grouped(sends, tasks, "team"),
        "by_routine": _grouped(sends, tasks, "routine"),
        "scheduled": _scheduled(tasks),
        "expiry": _expiry(tasks),
        "cancels": _cancels(run.cancels),
        "anomalies": {
            "duplicate_events": run.anomalies.duplicate_events,
            "conflicting_terminal": run.anomalies.conflicting_terminal,
            "events_after_terminal": run.anomalies.events_after_terminal,
            **_lifecycle_anomalies(tasks, run.cancels),
        },
        "timeline": timeline(run),
    }


def _scheduled(tasks: Sequence[TaskSample]) -> dict[str, Any]:
    """Accepted tasks asked to run later (delay > 0), how many started, and how late."""
    scheduled = [task for task in tasks if task.run_at is not None]
    lateness = [v for v in map(start_lateness_of, scheduled) if v is not None]
    return {
        "count": len(scheduled),
        "started": len(lateness),
        "start_lateness_ms": percentiles(lateness),
    }


def _expiry(tasks: Sequence[TaskSample]) -> dict[str, Any]:
    """Accepted tasks given an expiry, and the tasks that expired."""
    return {
        "count": sum(1 for task in tasks if task.expires_at is not None),
        "expired": sum(1 for task in tasks if task.status is Status.EXPIRED),
    }


def _cancels(cancels: Sequence[CancelSample]) -> dict[str, Any]:
    """The cancels planned, sent and answered: 202, 409 (too late: the task had ended;
    by the status it ended with) or another answer (rejected, with reasons)."""
    sent = [c for c in cancels if c.sent is not None]
    answered = [c for c in sent if c.latency is not None]
    too_late = [c for c in answered if c.status_code == 409]
    rejected = [c for c in answered if c.status_code not in (202, 409)]
    ended = Counter(c.ended.value if c.ended is not None else "unknown" for c in too_late)
    stages = Counter(c.stage or "unknown" for c in answered if c.status_code == 202)
    return {
        "planned": len(cancels),
        "sent": len(sent),
        "not_sent": len(cancels) - len(sent),
        "accepted": sum(stages.values()),
        "accepted_by_stage": dict(sorted(stages.items())),
        "too_late": len(too_late),
        "too_late_by_status": dict(sorted(ended.items())),
        "rejected": {"count": len(rejected), "reasons": _reasons(rejected)},
        "unanswered": len(sent) - len(answered),
        "latency_ms": percentiles(c.latency for c in answered if c.latency is not None),
    }


def _lifecycle_anomalies(
    tasks: Sequence[TaskSample], cancels: Sequence[CancelSample]
) -> dict[str, int]:
    """Broken lifecycle promises: a task that started before its run time or (first
    started) after its expiry, and a task that ended otherwise than CANCELLED after a
    cancel of it was answered 202."""
    by_id = {task.task_id: task for task in tasks}
    honoured = {c.task_id for c in cancels if c.status_code == 202 and c.latency is not None}
    return {
        "started_before_run_at": sum(
            1 for task in tasks if (start_lateness_of(task) or 0.0) < -CLOCK_SLACK
        ),
        "started_after_expiry": sum(
            1
            for task in tasks
            if task.expires_at is not None
            and task.first_started is not None
            and task.first_started > task.expires_at + CLOCK_SLACK
        ),
        "cancel_not_honoured": sum(
            1
            for task_id in honoured
            if (task := by_id.get(task_id)) is not None
            and task.terminal
            and task.status is not Status.CANCELLED
        ),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class _Answered(Protocol):
    status_code: int
    error_code: str | None
    error_message: str | None


def _reasons(rejected: Sequence[_Answered]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, str], list[_Answered]] = defaultdict(list)
    for sample in rejected:
        groups[(sample.status_code, sample.error_code or "unknown")].append(sample)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        {
            "status_code": status_code,
            "code": code,
            "count": len(samples),
            "example": samples[0].error_message,
        }
        for (status_code, code), samples in ordered
    ]


def _grouped(
    sends: Sequence[SendSample],
    tasks: Sequence[TaskSample],
    key: str,
    order: Sequence[str] = (),
) -> dict[str, Any]:
    send_groups: dict[str, list[SendSample]] = defaultdict(list)
    task_groups: dict[str, list[TaskSample]] = defaultdict(list)
    for sample in sends:
        send_groups[getattr(sample, key)].append(sample)
    for task in tasks:
        task_groups[getattr(task, key)].append(task)
    names = [name for name in order if name in send_groups or name in task_groups]
    names += sorted((send_groups.keys() | task_groups.keys()) - set(names))
    return {name: _group(send_groups[name], task_groups[name]) for name in names}


def _group(sends: Sequence[SendSample], tasks: Sequence[TaskSample]) -> dict[str, Any]:
    statuses = Counter(task.status for task in tasks)
    answered = [s for s in sends if s.latency is not None]
    group: dict[str, Any] = {
        "sent": len(sends),
        "accepted": sum(1 for s in answered if s.accepted),
        "rejected": sum(1 for s in answered if not s.accepted),
        "terminal": {status.value: statuses[status] for status in OUTCOMES},
        "not_finished": sum(n for status, n in statuses.items() if status not in TERMINAL),
        "accept_latency_ms": percentiles(
            s.latency for s in answered if s.accepted and s.latency is not None
        ),
    }
    for name, measure in TASK_METRICS.items():
        group[name] = percentiles(v for v in map(measure, tasks) if v is not None)
    return group


def durations_by_priority(run: RunRecord) -> dict[str, dict[str, list[float]]]:
    """Per submitted priority, the raw wait, run and end-to-end durations in ms (for plots)."""
    result: dict[str, dict[str, list[float]]] = {}
    for task in run.tasks.values():
        metrics = result.setdefault(task.priority, {name: [] for name in TASK_METRICS})
        for name, measure in TASK_METRICS.items():
            value = measure(task)
            if value is not None:
                metrics[name].append(value * 1000)
    return result


def timeline(run: RunRecord, *, bucket: float | None = None) -> dict[str, Any]:
    """Per-priority series over the run, one value per bucket of `bucket` seconds (by
    default the smallest whole number of seconds giving at most MAX_BUCKETS buckets):
    `sent` and `completed` per second in the bucket, and `in_flight` (accepted, not yet
    terminal) at the bucket's end; and, for all priorities, `lateness_max_ms`, the worst
    send lateness of the requests scheduled in the bucket (None if there were none). `t`
    holds each bucket's end, seconds after the start."""
    start = run.started_at
    end = run.finished_at if run.finished_at is not None else start
    span = max(end - start, 0.0)
    if bucket is None:
        bucket = float(max(1, math.ceil(span / MAX_BUCKETS)))
    count = max(1, math.ceil(span / bucket))
    edges = [round((i + 1) * bucket, 6) for i in range(count)]
    priorities = sorted(
        {s.priority for s in run.sends} | {t.priority for t in run.tasks.values()},
        key=_priority_rank,
    )
    worst: list[float | None] = [None] * count
    for sample in run.sends:
        index = min(max(int(sample.scheduled // bucket), 0), count - 1)
        worst[index] = max(worst[index] or 0.0, sample.lateness)
    series: dict[str, Any] = {
        "bucket_seconds": bucket,
        "t": edges,
        "lateness_max_ms": [None if w is None else round(w * 1000, 3) for w in worst],
    }
    for name in ("sent", "completed", "in_flight"):
        series[name] = {}
    for priority in priorities:
        tasks = [t for t in run.tasks.values() if t.priority == priority]
        sent = [s.sent for s in run.sends if s.priority == priority]
        accepted = sorted(t.accepted_at - start for t in tasks)
        finished = sorted(t.finished_at - start for t in tasks if t.finished_at is not None)
        series["sent"][priority] = _rates(sent, edges, bucket)
        series["completed"][priority] = _rates(finished, edges, bucket)
        series["in_flight"][priority] = [
            bisect_right(accepted, edge) - bisect_right(finished, edge) for edge in edges
        ]
    return series


def _rates(times: Iterable[float], edges: Sequence[float], bucket: float) -> list[float]:
    counts = [0] * len(edges)
    for t in times:
        index = min(max(int(t // bucket), 0), len(edges) - 1)
        counts[index] += 1
    return [round(n / bucket, 3) for n in counts]


def _priority_rank(name: str) -> tuple[int, str]:
    try:
        return (Priority(name).rank, name)
    except ValueError:
        return (len(Priority.ordered()), name)
