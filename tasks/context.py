"""What a routine may know about the run it is part of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RoutineContext:
    task_id: str
    team: str
    routine: str
    attempt: int  # 1 for the first run; counts retries and runs lost with their worker
    is_cancelled: Callable[[], bool] = field(default=_never, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled: a long routine checks it between steps
        and returns early (whatever it returns, the task ends CANCELLED)."""
        return self.is_cancelled()
