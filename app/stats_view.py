"""What one caller may see of the stream-statistics snapshot (written by the recorder's
StreamStats, format in recorder/stats_aggregate.py): everything for an admin, one team's
own figures for a team. Pure functions of the snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.status import Status
from core.stream_stats import ALL

_METRICS = ("wait", "run", "end_to_end")
_OUTCOMES = ("SUCCEEDED", "FAILED", "DEAD_LETTERED")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def empty_summary() -> dict[str, Any]:
    """A summary with no events: the shape the recorder writes, all zeros."""
    return {
        "transitions": {status.value: 0 for status in Status},
        "outcomes": dict.fromkeys(_OUTCOMES, 0),
        "terminal": 0,
        "success_rate": None,
        "throughput_per_s": 0.0,
        "in_flight": 0,
        "latency_ms": {
            metric: {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
            for metric in _METRICS
        },
    }


def _empty_counts() -> dict[str, Any]:
    return {
        "transitions": {status.value: 0 for status in Status},
        "outcomes": dict.fromkeys(_OUTCOMES, 0),
    }


def visible_teams(snapshot: dict[str, Any], team: str | None) -> list[str]:
    """The teams a caller sees: all the snapshot knows of for an admin (team None)."""
    if team is not None:
        return [team]
    scopes = snapshot["windows"][next(iter(snapshot["windows"]))]["scopes"]
    return list(dict.fromkeys([*snapshot["teams"], *(s for s in scopes if s != ALL)]))


def _restrict(scopes: dict[str, Any], team: str | None, teams: list[str], empty: Any) -> Any:
    """overall / by_team / by_priority / by_routine of one scope (ALL or the team)."""
    own = scopes.get(team if team is not None else ALL)
    return {
        "overall": own["overall"] if own else empty(),
        "by_team": {name: scopes[name]["overall"] if name in scopes else empty() for name in teams},
        "by_priority": own["by_priority"] if own else {},
        "by_routine": own["by_routine"] if own else {},
    }


def stats_view(
    snapshot: dict[str, Any], window: str, team: str | None, now: float
) -> dict[str, Any]:
    """The body of GET /api/v1/stats: figures over `window` for everyone (team None) or,
    for a team, computed over that team's tasks only, with breakdowns of that team only.
    Raises KeyError if the snapshot has no such window."""
    found = snapshot["windows"][window]
    teams = visible_teams(snapshot, team)
    totals = snapshot["totals"]
    return {
        "window": window,
        "window_seconds": found["seconds"],
        "covered_seconds": found["covered_seconds"],
        "team": team,
        "generated_at": _iso(snapshot["generated_at"]),
        "age_seconds": round(max(0.0, now - snapshot["generated_at"]), 3),
        "relative_accuracy": snapshot["relative_accuracy"],
        **_restrict(found["scopes"], team, teams, empty_summary),
        "totals": {
            "since": _iso(totals["since"]),
            **_restrict(totals["scopes"], team, teams, _empty_counts),
        },
    }


def recent_view(snapshot: dict[str, Any], team: str | None) -> list[dict[str, Any]]:
    """The most recently active tasks the caller may see, newest first."""
    rings = snapshot.get("recent", {})
    teams = [team] if team is not None else list(rings)
    found = [entry for name in teams for entry in rings.get(name, [])]
    return sorted(found, key=lambda entry: entry["seen"], reverse=True)
