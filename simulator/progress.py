"""The live progress display: counts per priority and status, refreshed a few times a second.

On a terminal it is a rich table redrawn in place; otherwise (a pipe, a CI log) it prints
one plain line every few seconds.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from core.priority import Priority
from core.status import Status
from simulator.tracker import Tracker

PLAIN_EVERY = 5.0  # seconds between lines when not on a terminal


class RichProgress:
    """A `Display` for `Replay`; see the module docstring."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self._tracker: Tracker | None = None
        self._live: Live | None = None
        self._started = time.monotonic()
        self._last_plain = 0.0

    def start(self, tracker: Tracker) -> None:
        """Begin showing `tracker`'s counts."""
        self._tracker = tracker
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()

    def refresh(self, phase: str) -> None:
        """Redraw (or, off a terminal, print a line if one is due)."""
        if self._tracker is None:
            return
        if self._live is not None:
            self._live.update(self.render(phase), refresh=True)
        elif phase == "done" or time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.monotonic()
            self.console.print(self.plain_line(phase), highlight=False)

    def stop(self) -> None:
        """Leave the last table on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def warn(self, message: str) -> None:
        """Show a warning above the table."""
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def render(self, phase: str) -> Group:
        """The header line and the table of counts."""
        tracker = self._require()
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("priority")
        # Statuses as people read them, by their first word ("dead" for dead-lettered), so
        # that all of them fit a 120-column terminal.
        for column in ("sent", "rejected", *(status.label.split("-")[0] for status in Status)):
            table.add_column(column, justify="right")
        for priority in self._priorities():
            row = [str(tracker.sent_by[priority]), str(tracker.rejected[priority])]
            row += [str(tracker.counts[(priority, status)]) for status in Status]
            table.add_row(priority, *row)
        return Group(Text(self.plain_line(phase)), table)

    def plain_line(self, phase: str) -> str:
        """One line: phase, elapsed time, sent of planned, accepted, finished, unfinished
        (and cancels answered of planned, if any are)."""
        tracker = self._require()
        run = tracker.run
        accepted = len(run.tasks)
        elapsed = time.monotonic() - self._started
        line = (
            f"{phase:<8} {elapsed:6.1f}s  sent {len(run.sends)}/{run.planned}  "
            f"accepted {accepted}  rejected {sum(tracker.rejected.values())}  "
            f"finished {accepted - tracker.unfinished}  unfinished {tracker.unfinished}"
        )
        cancels = tracker.cancels
        if cancels["planned"]:
            line += f"  cancels answered {cancels['answered']}/{cancels['planned']}"
        return line

    def _priorities(self) -> list[str]:
        tracker = self._require()
        known = [p.value for p in Priority.ordered()]
        return known + sorted(set(tracker.sent_by) - set(known))

    def _require(self) -> Tracker:
        if self._tracker is None:
            raise RuntimeError("the display was not started")
        return self._tracker
