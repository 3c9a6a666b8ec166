"""The platform's size and depth limits, all derived from three settings
(KAFKA_MESSAGE_MAX_BYTES, PAYLOAD_MAX_DEPTH, RESULT_MAX_BYTES), so that every message a
stage produces fits Kafka and every encoder on the way can write it. The table of limits,
with where each is enforced, is in docs/operations.md ("Limits")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEY_BYTES = 36  # a task id, the key of every request and status message
DEAD_LETTER_HEADERS_BYTES = 2048  # reason (at most REASON_MAX_CHARS) and the source headers
REASON_MAX_CHARS = 1000
EVENT_FIXED_BYTES = 16 * 1024  # an event's ids, times, names, error text and detail
ERROR_MAX_CHARS = 4000
TOPIC_FRAMING_BYTES = 1024  # a record batch's header and the record's own framing
# orjson writes at most 254 nested containers; the platform wraps a payload or a result in
# up to two more (the request or event object; the Celery argument list and envelope).
ENCODER_MAX_DEPTH = 254
PLATFORM_NESTING = 4
PAYLOAD_DEPTH_CEILING = ENCODER_MAX_DEPTH - PLATFORM_NESTING


@dataclass(frozen=True)
class Limits:
    message_max_bytes: int
    payload_max_depth: int
    result_max_bytes: int

    @property
    def request_max_bytes(self) -> int:
        """The largest encoded task request: with its key and the dead-letter headers it
        still fits one Kafka message."""
        return self.message_max_bytes - KEY_BYTES - DEAD_LETTER_HEADERS_BYTES

    @property
    def event_max_bytes(self) -> int:
        return self.result_max_bytes + EVENT_FIXED_BYTES

    @property
    def inline_payload_max_bytes(self) -> int:
        """Requests up to this size have their payload carried by the ACCEPTED event."""
        return self.result_max_bytes

    @property
    def topic_max_message_bytes(self) -> int:
        """What every platform topic must allow (`max.message.bytes`)."""
        return self.message_max_bytes + TOPIC_FRAMING_BYTES

    def problems(self) -> list[str]:
        """What makes these limits inconsistent, each naming its variable."""
        found = []
        if self.payload_max_depth > PAYLOAD_DEPTH_CEILING:
            found.append(
                f"PAYLOAD_MAX_DEPTH: {self.payload_max_depth} is deeper than the encoders can "
                f"write once the platform wraps a payload (at most {PAYLOAD_DEPTH_CEILING})"
            )
        if self.event_max_bytes > self.message_max_bytes:
            found.append(
                f"RESULT_MAX_BYTES: {self.result_max_bytes} leaves no room for the rest of a "
                f"status event in a Kafka message of {self.message_max_bytes} bytes "
                f"(KAFKA_MESSAGE_MAX_BYTES); at most {self.message_max_bytes - EVENT_FIXED_BYTES}"
            )
        return found


def json_depth(value: Any, limit: int) -> int:
    """How deeply containers nest in `value` (a scalar is 0, `{}` is 1), counted up to
    `limit + 1` at most: past the limit the rest of the value is not walked."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level:
        depth += 1
        if depth > limit:
            return depth
        children: list[Any] = []
        for item in level:
            children.extend(item.values() if isinstance(item, dict) else item)
        level = [child for child in children if isinstance(child, dict | list)]
    return depth


def deeper_than(limit: int, value: Any, text: bytes) -> bool:
    """Whether `value` nests deeper than `limit`. `text` is JSON that holds `value`: a text
    with no more brackets than the limit cannot nest deeper (counting bytes is far cheaper
    than walking a large value), so only a value with many containers is walked."""
    if text.count(b"{") + text.count(b"[") <= limit:
        return False
    return json_depth(value, limit) > limit


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    kept = limit
    while True:
        note = f"… ({len(text) - kept} more characters)"
        if kept + len(note) <= limit or kept == 0:
            return text[:kept] + note
        kept = max(0, limit - len(note))
