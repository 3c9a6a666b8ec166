"""Reading server-sent events in tests, as a browser's EventSource would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, decoded JSON data) for each event of a streaming response, as it
    arrives; comments and `retry:` lines are skipped. Ends when the server ends the stream."""
    event, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, orjson.loads("\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
