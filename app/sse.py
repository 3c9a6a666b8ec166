"""Server-sent events: framing, and a per-process cap on open streams.

A stream holds one gunicorn thread for its whole life, so each process serves at most a
quarter of its threads as streams (the rest stay free for ordinary requests), shared so
that every team can open one; past that the API answers 429 with Retry-After. Every stream
has a bounded lifetime, and ends soon after its key is revoked; clients reconnect.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from typing import Any

import orjson
from flask import Response

from app.errors import TooManyRequests


def sse_event(event: str, data: Any, *, event_id: str | None = None) -> bytes:
    """One event: its name, optional id, and its data as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def sse_comment(text: str) -> bytes:
    """A comment line, which clients ignore: keeps idle connections (and proxies) open."""
    return f": {text}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    """Tells the client how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n".encode()


class StreamSlots:
    """A non-blocking count of the streams this process serves, by owner (a team, or an
    admin key): an owner's first stream is refused only when every slot is taken, and a
    further one only while every other team can still open one. So one team cannot take
    every slot."""

    def __init__(self, limit: int, teams: Collection[str] = ()) -> None:
        self.limit = limit
        self.teams = frozenset(teams)
        self.open = 0
        self.held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str) -> None:
        """Claim a slot for `owner`; raises TooManyRequests (429) if it may not have one."""
        with self._lock:
            waiting_teams = sum(1 for t in self.teams if t != owner and not self.held[t])
            spare = self.limit - self.open - 1
            first_of_team = owner in self.teams and not self.held[owner]
            if self.open >= self.limit or (not first_of_team and spare < waiting_teams):
                raise TooManyRequests(
                    f"this server holds {self.held[owner]} live streams of yours and keeps "
                    f"the rest of its {self.limit} for other teams; retry shortly",
                    headers={"Retry-After": "5"},
                )
            self.open += 1
            self.held[owner] += 1

    def give_back(self, owner: str) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)
            self.held[owner] -= 1
            if self.held[owner] <= 0:
                del self.held[owner]


class StillAllowed:
    """Whether the key that opened a stream may still read it: asks `check` (a fresh
    lookup) at most every `every` seconds, so a revoked key's streams end within that."""

    def __init__(self, check: Callable[[], bool], every: float = 2.0) -> None:
        self.check = check
        self.every = every
        self._checked = time.monotonic()
        self._allowed = True

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._allowed and now - self._checked >= self.every:
            self._checked = now
            try:
                self._allowed = self.check()
            except Exception:  # Postgres away for a moment: the stream goes on
                self._allowed = True
        return self._allowed


REVOKED = "revoked"  # the `end` event's reason when the key was revoked meanwhile


def sse_response(chunks: Iterator[bytes], slots: StreamSlots, owner: str) -> Response:
    """A streaming response that gives its slot back when the server closes it (after
    the last chunk, or when the client went away)."""
    response = Response(chunks, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # no buffering in a reverse proxy
    response.call_on_close(lambda: slots.give_back(owner))
    return response
