"""What one caller may see of the stream-statistics snapshot (written by the recorder's
StreamStats, shape in core/stats_shape.py): everything for an admin, one team's own
figures for a team. Pure functions of the snapshot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic

from typing_extensions import TypedDict

from core.stats_shape import (
    Breakdown,
    Counts,
    F,
    RecentTask,
    Snapshot,
    Summary,
    empty_counts,
    empty_summary,
)
from core.stream_stats import ALL


class Figures(TypedDict, Generic[F]):
    """overall / by_team / by_priority / by_routine of one scope (everyone or a team)."""

    overall: F
    by_team: dict[str, F]
    by_priority: dict[str, F]
    by_routine: dict[str, F]


class TotalsBody(Figures[Counts]):
    since: str


class StatsBody(Figures[Summary]):
    """The body of GET /api/v1/stats (and of each `stats` event of its stream)."""

    window: str
    window_seconds: int
    covered_seconds: int
    team: str | None
    generated_at: str
    age_seconds: float
    relative_accuracy: float
    totals: TotalsBody


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def visible_teams(snapshot: Snapshot, team: str | None) -> list[str]:
    """The teams a caller sees: all the snapshot knows of for an admin (team None)."""
    if team is not None:
        return [team]
    scopes = snapshot["windows"][next(iter(snapshot["windows"]))]["scopes"]
    return list(dict.fromkeys([*snapshot["teams"], *(s for s in scopes if s != ALL)]))


def _restrict(
    scopes: dict[str, Breakdown[F]], team: str | None, teams: list[str], empty: Callable[[], F]
) -> Figures[F]:
    """overall / by_team / by_priority / by_routine of one scope (ALL or the team)."""
    own = scopes.get(team if team is not None else ALL)
    return {
        "overall": own["overall"] if own else empty(),
        "by_team": {name: scopes[name]["overall"] if name in scopes else empty() for name in teams},
        "by_priority": own["by_priority"] if own else {},
        "by_routine": own["by_routine"] if own else {},
    }


def stats_view(snapshot: Snapshot, window: str, team: str | None, now: float) -> StatsBody:
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
            **_restrict(totals["scopes"], team, teams, empty_counts),
        },
    }


def recent_view(snapshot: Snapshot, team: str | None) -> list[RecentTask]:
    """The most recently active tasks the caller may see, newest first."""
    rings = snapshot.get("recent", {})
    teams = [team] if team is not None else list(rings)
    found = [entry for name in teams for entry in rings.get(name, [])]
    return sorted(found, key=lambda entry: entry["seen"], reverse=True)
