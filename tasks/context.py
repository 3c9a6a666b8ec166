"""What a routine may know about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoutineContext:
    task_id: str
    team: str
    routine: str
    attempt: int  # 1 for the first run; counts retries and runs lost with their worker
