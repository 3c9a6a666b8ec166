"""`/api/v1/stats`: stream statistics (counts by status, success rate, throughput, in flight
and scheduled now, latency percentiles; overall and by team, priority and routine) over a
sliding window, and `/api/v1/stats/stream`, the same figures live as server-sent events
with chart history.

A team key sees its own team's figures only; an admin key sees everything (and may narrow
to one team with `team=`). The figures come from the recorder's snapshot in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Response

from app.api import principal
from app.auth import presented_key, stream_owner
from app.errors import BadRequest, Unavailable
from app.http import json_response, query_args
from app.services import services
from app.sse import REVOKED, StillAllowed, sse_comment, sse_event, sse_response, sse_retry
from app.stats_store import StatsStore, StatsUnavailable
from app.stats_view import recent_view, stats_view
from core.stats_shape import Snapshot
from core.stream_stats import ALL, DEFAULT_WINDOW, WINDOWS

# Under the /api/v1 parent (app/api.py), whose hook authenticates the caller.
blueprint = Blueprint("stats", __name__, url_prefix="/stats")

STREAM_SECONDS = 600  # a stream's longest life; clients reconnect
TICK_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


def _window(args: dict[str, str]) -> str:
    window = args.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise BadRequest(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
    return window


def _team(args: dict[str, str]) -> str | None:
    """The team whose figures the caller gets: its own for a team key; everyone's (None)
    or the one asked for with `team=` for an admin."""
    team = args.get("team")
    if team is not None and team not in services().settings.teams:
        raise BadRequest(f"team: unknown team {team!r}")
    return principal().scope(team)


def _snapshot(store: StatsStore) -> Snapshot:
    try:
        return store.snapshot()
    except StatsUnavailable as exc:
        raise Unavailable(f"statistics are not available: {exc}") from None


@blueprint.get("")
def read_stats() -> Response:
    args = query_args({"window", "team"})
    window, team = _window(args), _team(args)
    snapshot = _snapshot(services().stats_store)
    return json_response(stats_view(snapshot, window, team, time.time()))


def _max_seconds(args: dict[str, str]) -> int:
    text = args.get("max_seconds", str(STREAM_SECONDS))
    if not text.isdigit() or not 1 <= int(text) <= STREAM_SECONDS:
        raise BadRequest(f"max_seconds: {text!r} is not a whole number from 1 to {STREAM_SECONDS}")
    return int(text)


@blueprint.get("/stream")
def stream_stats() -> Response:
    args = query_args({"window", "team", "max_seconds"})
    window, team, lifetime = _window(args), _team(args), _max_seconds(args)
    store = services().stats_store
    _snapshot(store)  # 503 now, rather than an empty stream, if there are no figures
    keys, key, owner = services().keys, presented_key(), stream_owner(principal())
    allowed = StillAllowed(lambda: keys.lookup(key, fresh_only=True) is not None)
    chunks = _stream(store, window, team, lifetime, allowed)
    slots = services().stream_slots
    slots.take(owner)
    return sse_response(chunks, slots, owner)


def _stream(
    store: StatsStore,
    window: str,
    team: str | None,
    lifetime: float,
    allowed: Callable[[], bool] = lambda: True,
) -> Iterator[bytes]:
    """`hello`; one `point` per chart point of the history, oldest first; then, whenever
    the snapshot changed (at most once a second), its new `point`s and a `stats` event (the
    /api/v1/stats figures and the latest tasks); keep-alive comments while nothing changes;
    `end` when the lifetime is over, or soon after the key is revoked."""
    scope = ALL if team is None else team
    started = time.monotonic()
    yield sse_retry(3000)
    yield sse_event("hello", {"window": window, "team": team, "max_seconds": lifetime})
    last_t: float = -1
    try:
        for point in store.history(scope):
            yield sse_event("point", point)
            last_t = point["t"]
    except StatsUnavailable as exc:
        yield sse_event("unavailable", {"message": str(exc)})
    last_generated: float | None = None
    quiet_since = time.monotonic()
    while time.monotonic() - started < lifetime:
        try:
            snapshot = store.snapshot()
            fresh = [p for p in store.history(scope, last=5) if p["t"] > last_t]
        except StatsUnavailable as exc:
            yield sse_event("unavailable", {"message": str(exc)})
        else:
            if snapshot["generated_at"] != last_generated:
                last_generated = snapshot["generated_at"]
                for point in fresh:
                    yield sse_event("point", point)
                    last_t = point["t"]
                body = {
                    "stats": stats_view(snapshot, window, team, time.time()),
                    "recent": recent_view(snapshot, team),
                }
                yield sse_event("stats", body)
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            yield sse_comment("keep-alive")
            quiet_since = time.monotonic()
        if not allowed():
            yield sse_event("end", {"reason": REVOKED, "reconnect": False})
            return
        time.sleep(min(TICK_SECONDS, max(0.0, lifetime - (time.monotonic() - started))))
    yield sse_event("end", {"reason": "lifetime", "reconnect": True})
