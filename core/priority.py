"""Priorities, the queues they map to, and what each one means by default.

This module is the one place priorities are declared: everything else (settings, routing,
the bridge's scheduler, the dashboard, the simulator, the bench) derives them from here.
Adding a priority means adding a member and its row in each table below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Priority(enum.StrEnum):
    """A task's priority; each one is also the name of a Celery queue. Declared highest
    first: the declaration order is the rank."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the highest, one more for each level below: smaller runs first."""
        return _ORDER.index(self)

    def demoted(self) -> Priority:
        """The next lower priority (the lowest stays where it is)."""
        return _ORDER[min(self.rank + 1, len(_ORDER) - 1)]

    @classmethod
    def ordered(cls) -> tuple[Priority, ...]:
        """Highest first."""
        return _ORDER

    @classmethod
    def highest(cls) -> Priority:
        return _ORDER[0]

    @classmethod
    def lowest(cls) -> Priority:
        return _ORDER[-1]


_ORDER: tuple[Priority, ...] = tuple(Priority)

# Worker time shares when every queue has a backlog (the default of PRIORITY_WEIGHTS).
DEFAULT_WEIGHTS: Mapping[Priority, int] = MappingProxyType(
    {Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 1}
)
# How charts draw each priority: the dashboard (through its page) and the simulator's plots.
COLORS: Mapping[Priority, str] = MappingProxyType(
    {Priority.HIGH: "#d62728", Priority.MEDIUM: "#ff7f0e", Priority.LOW: "#1f77b4"}
)

for _table, _name in ((DEFAULT_WEIGHTS, "DEFAULT_WEIGHTS"), (COLORS, "COLORS")):
    # A priority added to the enum alone would silently get no worker time or no colour.
    if set(_table) != set(Priority):
        raise RuntimeError(f"core.priority.{_name} must have exactly one entry per Priority")


def names() -> list[str]:
    """The priorities' names, highest first (what JSON and SQL carry)."""
    return [p.value for p in _ORDER]


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
            known = ", ".join(names())
            raise ValueError(f"{name.strip()!r} is not a priority ({known})") from None
        try:
            value = int(number)
        except ValueError:
            raise ValueError(f"{number.strip()!r} in {part!r} is not a whole number") from None
        if value < 0:
            raise ValueError(f"{part!r}: {what} must not be negative")
        result[priority] = value
    return result
