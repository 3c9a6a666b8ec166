"""Server-sent events: framing, and a per-process cap on open streams.

A stream holds one gunicorn thread for its whole life, so each process serves at most a
quarter of its threads as streams (the rest stay free for ordinary requests); past that
the API answers 429 with Retry-After. Every stream has a bounded lifetime; clients
reconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
    """A non-blocking counter of the streams this process serves."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        """Claim a slot; raises TooManyRequests (429) if all are taken."""
        with self._lock:
            if self.open >= self.limit:
                raise TooManyRequests(
                    f"this server holds its limit of {self.limit} live streams; retry shortly",
                    headers={"Retry-After": "5"},
                )
            self.open += 1

    def give_back(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)


def sse_response(chunks: Iterator[bytes], slots: StreamSlots) -> Response:
    """A streaming response that gives its slot back when the server closes it (after
    the last chunk, or when the client went away)."""
    response = Response(chunks, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # no buffering in a reverse proxy
    response.call_on_close(slots.give_back)
    return response
