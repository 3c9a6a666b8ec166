"""Workers under stress: time limits, a task that kills its worker, graceful shutdown,
and a worker killed mid-task (the reconciler notices within seconds)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import orjson
import pytest

from core.settings import Settings
from tests.helpers import wait_for
from tests.instance import Instance, submit
from tests.tasks_db import events, wait_terminal

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROUTINES = {
    "slow": {"function": "tasks.routines:sleep", "timeout": 1},
    "stubborn": {"function": "tests.routines_for_tests:stubborn", "timeout": 1},
    "crash": {"function": "tests.routines_for_tests:crash", "timeout": 10},
}


@pytest.fixture(scope="module")
def instance(stack: Settings) -> Iterator[Instance]:
    with Instance(
        stack, "reliab", WORKER_CONCURRENCY="2", ROUTINES=orjson.dumps(ROUTINES).decode()
    ).running(["api", "recorder", "bridge", "worker-1"]) as instance:
        yield instance


def _statuses(instance: Instance, task_id: str) -> list[str]:
    return [e.status for e in events(instance.engine, [task_id])[task_id]]


def test_soft_and_hard_time_limits_end_the_task_failed_with_the_reason(instance: Instance) -> None:
    with instance.client() as client:
        soft, hard = submit(
            client,
            [
                {"team": "alpha", "routine": "slow", "payload": {"ms": 5000}},
                {"team": "alpha", "routine": "stubborn", "payload": {"seconds": 30}},
            ],
        )
        assert wait_terminal(instance.engine, [soft, hard], timeout=90) == {
            soft: "FAILED",
            hard: "FAILED",
        }
        soft_error = client.get(f"/api/v1/tasks/{soft}").json()["error"]
        hard_error = client.get(f"/api/v1/tasks/{hard}").json()["error"]
    assert "ran past its 1s time limit" in soft_error
    assert "killed at its hard time limit of 2s" in hard_error


def test_a_task_that_kills_its_worker_ends_failed_instead_of_crash_looping(
    instance: Instance,
) -> None:
    with instance.client() as client:
        (task_id,) = submit(client, [{"team": "bravo", "routine": "crash"}])
        assert wait_terminal(instance.engine, [task_id], timeout=120) == {task_id: "FAILED"}
        task = client.get(f"/api/v1/tasks/{task_id}").json()
    # Three runs (retries 0 + 1 + TASK_LOST_RETRIES 2), each lost with its worker process.
    assert "gave up after 3 attempts" in task["error"]
    assert "the worker running it was lost (crashed or killed) 3 times" in task["error"]
    assert _statuses(instance, task_id)[-1] == "FAILED"
    # The worker survived its children's deaths and still runs other work.
    with instance.client() as client:
        (after,) = submit(client, [{"team": "bravo", "routine": "noop"}])
    assert wait_terminal(instance.engine, [after]) == {after: "SUCCEEDED"}


def test_sigterm_drains_running_tasks_before_the_worker_stops(instance: Instance) -> None:
    with instance.client() as client:
        ids = submit(
            client,
            [{"team": "alpha", "routine": "sleep", "payload": {"ms": 1500}} for _ in range(4)],
        )
    wait_for(
        lambda: sum("STARTED" in _statuses(instance, t) for t in ids) >= 2,
        timeout=60,
        what="two tasks running",
    )
    instance.restart(["worker-1"])  # SIGTERM: warm shutdown, then a fresh worker
    assert set(wait_terminal(instance.engine, ids, timeout=120).values()) == {"SUCCEEDED"}
    for task_id in ids:
        assert _statuses(instance, task_id).count("STARTED") == 1, task_id


def test_a_worker_killed_mid_task_is_noticed_and_its_task_runs_again(instance: Instance) -> None:
    with instance.client() as client:
        (task_id,) = submit(
            client, [{"team": "charlie", "routine": "sleep", "payload": {"ms": 4000}}]
        )
    wait_for(lambda: "STARTED" in _statuses(instance, task_id), timeout=60, what="the task to run")
    instance.kill("worker-1", signal.SIGKILL)  # the whole worker: main process and pool
    instance.up(["worker-1"])
    # Celery would hand the task out again only after Redis's visibility timeout (an hour
    # by default); the lease expires in seconds and the reconciler dispatches it again.
    assert wait_terminal(instance.engine, [task_id], timeout=120) == {task_id: "SUCCEEDED"}
    with instance.client() as client:
        timeline = client.get(f"/api/v1/tasks/{task_id}").json()["timeline"]
    queued_again = [e for e in timeline if e["status"] == "QUEUED" and e["detail"]]
    assert any("dispatched again" in e["detail"].get("note", "") for e in queued_again)
    assert [e["status"] for e in timeline].count("SUCCEEDED") == 1
