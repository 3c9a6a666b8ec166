"""The simulator's errors. Each one ends a command with a clear message and a non-zero exit."""

from __future__ import annotations


class SimulatorError(Exception):
    """A run that cannot go on; `str(error)` is a message for the user."""

    exit_code = 1


class DatasetError(SimulatorError):
    """A dataset that cannot be replayed: nothing was sent. `problems` lists every fault
    found, each naming the entry, the field and the value (e.g. `requests[1].at: ...`)."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid dataset {source} ({count} {noun}); nothing was sent")


class PlatformUnreachable(SimulatorError):
    """The platform's API did not answer its health check, or refused the API key."""

    exit_code = 3


class FollowUnavailable(SimulatorError):
    """The status topic cannot be followed (Kafka unreachable)."""
