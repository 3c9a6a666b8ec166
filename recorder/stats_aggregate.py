"""Stream statistics from status events, as plain data: the ksqlDB role inside the platform.

`StreamAggregator.observe(events, now)` accounts for a batch that arrived at `now`;
`snapshot(now)` and `chart_points(now)` describe the windows as JSON-ready dicts (their
shape is declared in core/stats_shape.py, which the API serves from). Pure: no I/O, and
the caller's clock.

Windows are over arrival time and hold whole closed seconds, so a new event counts from
the next second on. Latencies come from the events' own timestamps (`at`):
wait = ACCEPTED (or a scheduled task's run_at, if later) -> first STARTED,
run = last STARTED -> end, end_to_end = ACCEPTED -> end. In flight and scheduled are
counts of now, not of a window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from core import stats_shape
from core.messages import StatusEvent
from core.priority import names as priority_names
from core.stats_shape import (
    METRICS,
    Breakdown,
    ChartPoint,
    Counts,
    F,
    Latency,
    Snapshot,
    Summary,
    Totals,
    Window,
)
from core.status import OUTCOMES, Status
from core.stream_stats import ALL, CHART_WINDOW_SECONDS, WINDOWS
from recorder.stats_tasks import Labels, TaskTracker
from recorder.stats_windows import (
    RELATIVE_ACCURACY,
    Group,
    Tally,
    Timeline,
    percentile,
    quantiles,
)

PRIORITIES = tuple(priority_names())
_CHART = "chart"
# Scope -> dimension (core.stats_shape.DIMENSIONS) -> the values to report, in order.
Layout = dict[str, dict[str, list[str]]]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class StreamAggregator:
    def __init__(
        self,
        *,
        teams: list[str],
        start: float,
        tracker: TaskTracker | None = None,
        windows: Mapping[str, int] = WINDOWS,
        chart_seconds: int = CHART_WINDOW_SECONDS,
    ) -> None:
        self.teams = list(teams)
        self.started_at = start
        self.tracker = tracker or TaskTracker(teams=self.teams)
        self.window_names = list(windows)
        self.timeline = Timeline({**windows, _CHART: chart_seconds}, start, self._groups_of)
        self._groups: dict[Labels, tuple[Group, ...]] = {}

    def observe(self, events: Iterable[StatusEvent], now: float) -> None:
        """Account for events that arrived at `now` (repeats are recognised and skipped)."""
        slot = self.timeline.current(now)
        for event in events:
            seen = self.tracker.observe(event, now)
            if seen is None:
                continue
            # Keyed by the fine labels; spread over groups when the second closes.
            slot.count(seen.labels, "t:" + seen.status.value)
            if seen.outcome is not None:
                slot.count(seen.labels, "o:" + seen.outcome.value)
            for metric, ms in seen.samples:
                slot.sample(seen.labels, metric, ms)

    def advance(self, now: float) -> None:
        """Move the windows to `now` and forget tasks past the horizon."""
        self.timeline.advance(now)
        self.tracker.evict(now)

    def _groups_of(self, labels: Labels) -> tuple[Group, ...]:
        """The six groups an event of these labels counts in: overall, by priority and by
        routine, each for everyone and for its team."""
        groups = self._groups.get(labels)
        if groups is None:
            team, priority, routine = labels
            groups = self._groups[labels] = tuple(
                group
                for scope in (ALL, team)
                for group in (
                    (scope, "overall", ""),
                    (scope, "priority", priority),
                    (scope, "routine", routine),
                )
            )
        return groups

    def _by_group(self, by_labels: Counter[Labels]) -> Counter[Group]:
        """Tasks counted by their labels (in flight, scheduled), spread over their groups."""
        by_group: Counter[Group] = Counter()
        for labels, count in by_labels.items():
            for group in self._groups_of(labels):
                by_group[group] += count
        return by_group

    # Snapshot.

    def snapshot(self, now: float) -> Snapshot:
        """Every window's figures for everyone and for each team, totals since the start,
        and each team's most recently active tasks."""
        self.advance(now)
        in_flight = self._by_group(self.tracker.in_flight)
        scheduled = self._by_group(self.tracker.scheduled)
        windows: dict[str, Window] = {}
        for name in self.window_names:
            window = self.timeline.windows[name]
            window.settle()
            covered = self.timeline.covered(name)
            tally = window.tally

            def summary(group: Group, tally: Tally = tally, covered: int = covered) -> Summary:
                return stats_shape.summary(
                    _counts(tally.counts.get(group, Counter())),
                    covered_seconds=covered,
                    in_flight=in_flight[group],
                    scheduled=scheduled[group],
                    latency_ms={metric: _latency(tally, (group, metric)) for metric in METRICS},
                )

            windows[name] = {
                "seconds": window.seconds,
                "covered_seconds": covered,
                "scopes": _breakdowns(self._layout(tally, in_flight + scheduled), summary),
            }
        return {
            "version": stats_shape.VERSION,
            "generated_at": round(now, 3),
            "started_at": round(self.started_at, 3),
            "relative_accuracy": RELATIVE_ACCURACY,
            "teams": self.teams,
            "windows": windows,
            "totals": self._totals(),
            "recent": {
                team: [entry.body() for entry in reversed(ring.values())]
                for team, ring in self.tracker.recent.items()
            },
            "tracking": {
                "tasks": self.tracker.tracked,
                "event_ids": len(self.tracker.event_ids),
                "evicted_in_flight": self.tracker.evicted_in_flight,
                "evicted_scheduled": self.tracker.evicted_scheduled,
            },
        }

    def _layout(self, tally: Tally, now: Counter[Group]) -> Layout:
        """Scope -> dimension -> the values to report: every configured team and priority,
        and whatever else has figures (in the tally, or counted `now`)."""
        layout: dict[str, dict[str, set[str]]] = {
            scope: {"priority": set(PRIORITIES), "routine": set()} for scope in (ALL, *self.teams)
        }
        for scope, dim, value in (*tally.counts, *(key[0] for key in tally.bins), *now):
            dims = layout.setdefault(scope, {"priority": set(PRIORITIES), "routine": set()})
            if dim != "overall":
                dims[dim].add(value)
        return {
            scope: {dim: sorted(values, key=_value_order) for dim, values in dims.items()}
            for scope, dims in layout.items()
        }

    def _totals(self) -> Totals:
        totals = self.timeline.totals

        def counts(group: Group) -> Counts:
            return _counts(totals.counts.get(group, Counter()))

        return {
            "since": round(self.started_at, 3),
            "scopes": _breakdowns(self._layout(totals, Counter()), counts),
        }

    # Chart points.

    def chart_points(self, now: float) -> dict[str, ChartPoint]:
        """One point per scope for the live charts, over the trailing chart window:
        throughput, in flight, scheduled and wait p50/p90 by priority, throughput by team."""
        self.advance(now)
        window = self.timeline.windows[_CHART]
        window.settle()
        tally = window.tally
        covered = self.timeline.covered(_CHART)
        in_flight = self._by_group(self.tracker.in_flight)
        scheduled = self._by_group(self.tracker.scheduled)

        def now_by_priority(counts: Counter[Group], scope: str) -> dict[str, int]:
            return {
                "total": counts[(scope, "overall", "")],
                **{p: counts[(scope, "priority", p)] for p in PRIORITIES},
            }

        def rate(group: Group) -> float:
            done = sum(tally.counts.get(group, Counter())["o:" + s.value] for s in OUTCOMES)
            return round(done / covered, 3) if covered else 0.0

        def wait(scope: str, priority: str, q: float) -> float | None:
            bins = tally.bins.get(((scope, "priority", priority), "wait"))
            return _round(percentile(bins, q)) if bins else None

        points: dict[str, ChartPoint] = {}
        for scope in (ALL, *self.teams):
            teams = self.teams if scope == ALL else [scope]
            points[scope] = {
                "t": self.timeline.second,
                "throughput": {
                    "total": rate((scope, "overall", "")),
                    **{p: rate((scope, "priority", p)) for p in PRIORITIES},
                },
                "in_flight": now_by_priority(in_flight, scope),
                "scheduled": now_by_priority(scheduled, scope),
                "wait_p50": {p: wait(scope, p, 0.5) for p in PRIORITIES},
                "wait_p90": {p: wait(scope, p, 0.9) for p in PRIORITIES},
                "throughput_by_team": {team: rate((team, "overall", "")) for team in teams},
            }
        return points


def _value_order(value: str) -> tuple[int, str]:
    """Priorities high to low, then anything else by name."""
    return (PRIORITIES.index(value), "") if value in PRIORITIES else (len(PRIORITIES), value)


def _counts(found: Counter[str]) -> Counts:
    """A group's counts from its counters ("t:<status>" events, "o:<status>" outcomes)."""
    return {
        "transitions": {status.value: found["t:" + status.value] for status in Status},
        "outcomes": {status.value: found["o:" + status.value] for status in OUTCOMES},
    }


def _breakdowns(layout: Layout, figures: Callable[[Group], F]) -> dict[str, Breakdown[F]]:
    """Each scope's figures: overall, then by priority and by routine."""
    return {
        scope: {
            "overall": figures((scope, "overall", "")),
            "by_priority": {v: figures((scope, "priority", v)) for v in dims["priority"]},
            "by_routine": {v: figures((scope, "routine", v)) for v in dims["routine"]},
        }
        for scope, dims in layout.items()
    }


def _latency(tally: Tally, key: tuple[Group, str]) -> Latency:
    bins = tally.bins.get(key)
    found = quantiles(bins, (0.5, 0.9, 0.99)) if bins else None
    if not bins or found is None:
        return stats_shape.empty_latency()
    highest = tally.maxes.get(key, 0.0)
    # A bucket's representative may lie a little above the exact maximum; never report that.
    p50, p90, p99 = (_round(min(value, highest)) for value in found)
    return {
        "count": sum(bins.values()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": _round(highest),
    }
