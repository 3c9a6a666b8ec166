"""The stream-statistics snapshot: what the recorder computes and publishes
(recorder/stats_aggregate.py) and the API reads and serves (app/stats_view.py), declared
once as typed dicts.

They are the JSON documents themselves (a TypedDict costs nothing at run time), so mypy
checks both sides against this one declaration. Where the keys and values are in Redis is
in core/stream_stats.py. Statuses and outcomes come from core.status, so a status added
there appears in every count here.
"""

from __future__ import annotations

from typing import Generic, TypeVar

# pydantic reads TypedDicts (for the OpenAPI document) only from typing_extensions on 3.11.
from typing_extensions import TypedDict

from core.status import OUTCOMES, SUCCESS, Status
from core.status import names as status_names

VERSION = 2  # 2: `scheduled` in summaries and chart points, `evicted_scheduled`
# The latencies measured, in ms: wait = ACCEPTED (a scheduled task: its run_at, if later) ->
# first STARTED, run = last STARTED -> end, end_to_end = ACCEPTED -> end.
METRICS = ("wait", "run", "end_to_end")
# How a summary breaks down below "overall" (each dimension is a `by_<dimension>` key).
DIMENSIONS = ("priority", "routine")


class Latency(TypedDict):
    """Nearest-rank percentiles of one metric, in ms; all None when nothing was measured."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


class Counts(TypedDict):
    """Events by status, and tasks by how they ended (every terminal status)."""

    transitions: dict[str, int]
    outcomes: dict[str, int]


class Summary(Counts):
    """The figures of one group over a window."""

    terminal: int
    success_rate: float | None
    throughput_per_s: float
    in_flight: int  # now: accepted, not finished, not scheduled (not windowed)
    scheduled: int  # now: waiting for their run_at (not windowed)
    latency_ms: dict[str, Latency]  # by metric (METRICS)


F = TypeVar("F", Summary, Counts)


class Breakdown(TypedDict, Generic[F]):
    """One scope (everyone, or one team): overall, then by each of DIMENSIONS."""

    overall: F
    by_priority: dict[str, F]
    by_routine: dict[str, F]


class Window(TypedDict):
    seconds: int
    covered_seconds: int
    scopes: dict[str, Breakdown[Summary]]  # by scope: ALL or a team


class Totals(TypedDict):
    """Counts since the recorder started."""

    since: float
    scopes: dict[str, Breakdown[Counts]]


class RecentTask(TypedDict):
    task_id: str
    team: str
    routine: str
    priority: str
    status: str
    at: str  # ISO 8601, the event's time
    seen: float  # epoch seconds, when the recorder saw it


class Tracking(TypedDict):
    tasks: int
    event_ids: int
    evicted_in_flight: int
    evicted_scheduled: int


class Snapshot(TypedDict):
    """The document at core.stream_stats.SNAPSHOT_KEY."""

    version: int
    generated_at: float  # epoch seconds
    started_at: float
    relative_accuracy: float
    teams: list[str]
    windows: dict[str, Window]  # by window name (core.stream_stats.WINDOWS)
    totals: Totals
    recent: dict[str, list[RecentTask]]  # by team, newest first
    tracking: Tracking


class ChartPoint(TypedDict):
    """One second of a scope's chart history (core.stream_stats.history_key)."""

    t: int
    throughput: dict[str, float]  # "total" and each priority
    in_flight: dict[str, int]  # "total" and each priority
    scheduled: dict[str, int]  # "total" and each priority
    wait_p50: dict[str, float | None]  # by priority
    wait_p90: dict[str, float | None]
    throughput_by_team: dict[str, float]


def summary(
    found: Counts,
    *,
    covered_seconds: int,
    in_flight: int,
    scheduled: int,
    latency_ms: dict[str, Latency],
) -> Summary:
    """A group's summary from its counts: finished tasks, the share that succeeded, and
    finished tasks per second over `covered_seconds`."""
    outcomes = found["outcomes"]
    terminal = sum(outcomes.values())
    return {
        "transitions": found["transitions"],
        "outcomes": outcomes,
        "terminal": terminal,
        "success_rate": round(outcomes[SUCCESS.value] / terminal, 4) if terminal else None,
        "throughput_per_s": round(terminal / covered_seconds, 3) if covered_seconds else 0.0,
        "in_flight": in_flight,
        "scheduled": scheduled,
        "latency_ms": latency_ms,
    }


def empty_latency() -> Latency:
    return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}


def empty_counts() -> Counts:
    """Every status and every outcome, at zero."""
    return {
        "transitions": dict.fromkeys(status_names(Status), 0),
        "outcomes": dict.fromkeys(status_names(OUTCOMES), 0),
    }


def empty_summary() -> Summary:
    """A summary with no events: the shape the recorder writes, all zeros."""
    return summary(
        empty_counts(),
        covered_seconds=0,
        in_flight=0,
        scheduled=0,
        latency_ms={metric: empty_latency() for metric in METRICS},
    )
