"""Priorities and the queues they map to."""

from __future__ import annotations

import enum


class Priority(enum.StrEnum):
    """A task's priority; each one is also the name of a Celery queue."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 2 for low: smaller runs first."""
        return _ORDER.index(self)

    def demoted(self) -> Priority:
        """The next lower priority (low stays low)."""
        return _ORDER[min(self.rank + 1, len(_ORDER) - 1)]

    @classmethod
    def ordered(cls) -> tuple[Priority, ...]:
        """High first."""
        return _ORDER


_ORDER: tuple[Priority, ...] = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


def parse_priority_map(text: str, *, what: str) -> dict[Priority, int]:
    """Parse `high:6,medium:3,low:1` into a map; raises ValueError naming the bad part."""
    result: dict[Priority, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, number = part.partition(":")
        if not sep:
            raise ValueError(f"{part!r} is not of the form priority:{what}")
        try:
            priority = Priority(name.strip())
        except ValueError:
            raise ValueError(f"{name.strip()!r} is not a priority (high, medium, low)") from None
        try:
            value = int(number)
        except ValueError:
            raise ValueError(f"{number.strip()!r} in {part!r} is not a whole number") from None
        if value < 0:
            raise ValueError(f"{part!r}: {what} must not be negative")
        result[priority] = value
    return result
