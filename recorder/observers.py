"""Hooks that see every batch of status events after the recorder has committed it.

An observer does something cross-cutting with the stream (statistics, metrics) without
the recorder knowing what. Hooks do nothing by default; an observer's failure is logged
and never stops recording.
"""

from __future__ import annotations

from core.messages import StatusEvent


class Observer:
    def on_batch(self, events: list[StatusEvent]) -> None:
        """Called with each committed batch, in stream order (may contain repeats)."""

    def on_idle(self) -> None:
        """Called when a poll brought nothing, at least every few tenths of a second."""

    def close(self) -> None:
        """Called once at shutdown."""
