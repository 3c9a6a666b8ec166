"""Status progress: the order in which a task may move."""

from __future__ import annotations

from core.status import TERMINAL, Status, progress


def test_progress_orders_a_task_with_retries() -> None:
    path = [
        (Status.ACCEPTED, 0),
        (Status.QUEUED, 1),
        (Status.STARTED, 1),
        (Status.RETRYING, 1),
        (Status.QUEUED, 2),
        (Status.STARTED, 2),
        (Status.SUCCEEDED, 2),
    ]
    steps = [progress(status, attempt) for status, attempt in path]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)


def test_every_terminal_status_is_beyond_any_attempt() -> None:
    for status in TERMINAL:
        assert progress(status, 1) > progress(Status.RETRYING, 10_000)
        assert status.terminal
    assert not Status.RETRYING.terminal
