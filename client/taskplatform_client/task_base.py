"""What the sync `Task` and the async `AsyncTask` handles share."""

from __future__ import annotations

from taskplatform_client.models import Accepted


class TaskBase:
    def __init__(
        self, task_id: str, accepted: Accepted | None, idempotency_key: str | None
    ) -> None:
        self.id = task_id
        self.accepted = accepted  # the submit's answer (None for a handle made by id)
        self.idempotency_key = idempotency_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskBase) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
