"""Priority scheduling on a real platform instance with exactly one worker slot.

Behaviour, not timings: the order in which tasks START under backlog, which task a
freed slot goes to, the queues tasks land in, and what their timelines say. A backlog is
built while a gate task holds the slot, and the test releases the gate only once the
bridge has taken in every task, so the machine's speed does not decide what waits.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.helpers import wait_for
from tests.instance import Instance, submit
from tests.isolated import REPO
from tests.pipeline_instance import one_slot_instance
from tests.tasks_db import events, wait_terminal

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# A routine whose tasks each travel in their own Celery message (noop and echo may share
# one when many wait, which would make the start order coarser than one task at a time).
ONE_AT_A_TIME = {"routine": "sleep", "payload": {"ms": 0}}


def _one_at_a_time(team: str, priority: str, count: int) -> list[dict[str, Any]]:
    """`count` tasks of `team` at `priority`, each in a Celery message of its own."""
    return [{"team": team, **ONE_AT_A_TIME, "priority": priority} for _ in range(count)]


ROUTINES = {
    "report": {
        "function": "tasks.routines:sleep",
        "type": "batch",
        "priority": "low",
        "stagger": 4,
    },
    "gate": {"function": "tests.routines_for_tests:gate", "timeout": 120},
}


@pytest.fixture(scope="module")
def one_slot(stack: Settings) -> Iterator[Instance]:
    with one_slot_instance(
        stack,
        "prio",
        ROUTINES,
        TEAMS="alpha,bravo,delta",
        FLOOD_QUOTA="high:40",
        FLOOD_WINDOW_SECONDS="30",
    ) as instance:
        yield instance


def _started(instance: Instance, ids: list[str]) -> list[tuple[datetime, str]]:
    """(first STARTED time, task id), in start order."""
    found = events(instance.engine, ids)
    starts = []
    for task_id, rows in found.items():
        times = [r.at for r in rows if r.status == "STARTED"]
        assert times, f"{task_id} never started"
        starts.append((min(times), task_id))
    return sorted(starts)


def _have(instance: Instance, ids: list[str], status: str) -> bool:
    """Whether every one of these tasks has an event of this status in Postgres."""
    found = events(instance.engine, ids)
    return all(any(r.status == status for r in rows) for rows in found.values())


def _wait_until_all(instance: Instance, ids: list[str], status: str) -> None:
    wait_for(
        lambda: _have(instance, ids, status),
        timeout=60,
        interval=0.1,
        what=f"{len(ids)} tasks to be {status}",
    )


@contextmanager
def _held_slot(instance: Instance, folder: Path) -> Iterator[str]:
    """The only worker slot, held by a running gate task until the block ends."""
    release = folder / f"release-{uuid.uuid4().hex}"
    payload = {"release": str(release), "seconds": 100}
    with instance.client() as client:
        (gate,) = submit(
            client, [{"team": "alpha", "routine": "gate", "priority": "high", "payload": payload}]
        )
    try:
        _wait_until_all(instance, [gate], "STARTED")
        yield gate
    finally:
        release.touch()


def _backlog(instance: Instance, items: list[dict[str, Any]]) -> list[str]:
    """Submit `items` and wait until the bridge has taken in every one (it announces a
    task ACCEPTED as it takes it in): with the slot held, they all wait in the bridge."""
    with instance.client() as client:
        ids = submit(client, items)
    _wait_until_all(instance, ids, "ACCEPTED")
    return ids


def test_under_backlog_starts_follow_the_weights_and_low_is_in_every_round(
    one_slot: Instance, tmp_path: Path
) -> None:
    items = (
        [
            {"team": ("alpha", "bravo")[i % 2], **ONE_AT_A_TIME, "priority": "high"}
            for i in range(60)
        ]
        + _one_at_a_time("alpha", "medium", 30)
        + _one_at_a_time("bravo", "low", 20)
    )
    with _held_slot(one_slot, tmp_path):
        ids = _backlog(one_slot, items)
    wait_terminal(one_slot.engine, ids, timeout=180)
    priority_of = dict(zip(ids, (item["priority"] for item in items), strict=True))
    order = [priority_of[task_id] for _, task_id in _started(one_slot, ids)]

    # The first task of each priority takes the fast lane (nothing of its priority was
    # waiting): the worker runs them high, medium, low. Then the bridge's weighted turns.
    assert order[:3] == ["high", "medium", "low"]
    rounds = [Counter(order[3 + 10 * k : 13 + 10 * k]) for k in range(9)]
    for number, counts in enumerate(rounds):
        assert counts == {"high": 6, "medium": 3, "low": 1}, (number, order)
    # Within each round high leads; low comes after the high tasks of the round's first half.
    for k in range(9):
        window = order[3 + 10 * k : 13 + 10 * k]
        assert window[0] == "high"
        assert window.index("low") > window.index("medium")


def test_a_high_task_starts_before_the_low_backlog_queued_ahead_of_it(
    one_slot: Instance, tmp_path: Path
) -> None:
    with _held_slot(one_slot, tmp_path):
        lows = _backlog(one_slot, _one_at_a_time("bravo", "low", 8))
        high = _backlog(one_slot, [{"team": "alpha", "routine": "noop", "priority": "high"}])
        _wait_until_all(one_slot, high, "QUEUED")  # on its Celery queue, behind the gate
    wait_terminal(one_slot.engine, [*lows, *high], timeout=120)
    timeline = events(one_slot.engine, [*lows, *high])
    high_started = next(r.at for r in timeline[high[0]] if r.status == "STARTED")
    low_starts = [next(r.at for r in timeline[t] if r.status == "STARTED") for t in lows]
    # All eight low tasks were waiting when the high one came (the slot was held), and
    # every one of them starts after it, even the one already on its Celery queue.
    assert len(low_starts) == 8
    assert all(t > high_started for t in low_starts), (high_started, sorted(low_starts))


def test_one_teams_flood_does_not_stall_another_team_of_the_same_priority(
    one_slot: Instance, tmp_path: Path
) -> None:
    with _held_slot(one_slot, tmp_path):
        flood = _backlog(one_slot, _one_at_a_time("alpha", "medium", 60))
        quiet = _backlog(one_slot, _one_at_a_time("bravo", "medium", 5))
    wait_terminal(one_slot.engine, flood + quiet, timeout=120)
    order = [task_id for _, task_id in _started(one_slot, flood + quiet)]
    positions = [order.index(t) for t in quiet]
    # Teams take turns: bravo's five are done within the first dozen starts, not after 60.
    assert max(positions) < 12, positions


def test_staggering_spreads_a_batch_routine_over_its_window(one_slot: Instance) -> None:
    with one_slot.client() as client:
        ids = submit(
            client,
            [{"team": "delta", "routine": "report", "payload": {"ms": 1}} for _ in range(48)],
        )
    wait_terminal(one_slot.engine, ids, timeout=60)
    timeline = events(one_slot.engine, ids)
    holds = []
    for task_id in ids:
        accepted = next(r for r in timeline[task_id] if r.status == "ACCEPTED")
        queued = next(r for r in timeline[task_id] if r.status == "QUEUED")
        held = queued.detail["staggered_by_seconds"]
        assert 0 <= held < 4
        # Held at least that long (a slow machine only adds to it).
        assert (queued.at - accepted.at).total_seconds() >= held - 0.05
        holds.append(held)
    # Spread over the 4 s window, not landing at once: the holds the bridge decided (a
    # stable share of the window per task id), not the measured delays, which a slow
    # machine stretches. 48 tasks leave a second of the window empty once in ~250,000.
    assert max(holds) - min(holds) > 2.0
    assert {int(h) for h in holds} == {0, 1, 2, 3}


def test_a_flooding_team_is_demoted_and_the_timeline_says_why(one_slot: Instance) -> None:
    with one_slot.client() as client:
        flood = submit(
            client, [{"team": "delta", "routine": "noop", "priority": "high"} for _ in range(45)]
        )
        other = submit(client, [{"team": "bravo", "routine": "noop", "priority": "high"}])
    wait_terminal(one_slot.engine, flood + other, timeout=120)
    queued = {
        task_id: next(r for r in rows if r.status == "QUEUED")
        for task_id, rows in events(one_slot.engine, flood + other).items()
    }
    demoted = [t for t in flood if queued[t].queue == "medium"]
    assert len(demoted) == 5
    assert all(queued[t].queue == "high" for t in flood if t not in demoted)
    reason = queued[demoted[0]].detail["reason"]
    assert "team delta sent" in reason and "over its quota of 40" in reason
    assert queued[demoted[0]].detail["demoted_from"] == "high"
    assert queued[other[0]].queue == "high"  # another team is not punished
    with one_slot.client() as client:
        shown = client.get(f"/api/v1/tasks/{demoted[0]}").json()
    assert shown["queue"] == "medium" and shown["priority"] == "high"
    assert any("over its quota" in (e["detail"] or {}).get("reason", "") for e in shown["timeline"])


def test_a_team_added_in_the_environment_works_without_code_changes(one_slot: Instance) -> None:
    # `delta` exists only in this instance's TEAMS.
    from app.auth import create_key

    key = create_key(one_slot.engine, team="delta", admin=False)[1]
    with one_slot.client(key) as client:
        (task_id,) = submit(client, [{"team": "delta", "routine": "echo", "payload": {"d": 1}}])
        assert wait_terminal(one_slot.engine, [task_id]) == {task_id: "SUCCEEDED"}
        assert client.get(f"/api/v1/tasks/{task_id}").json()["result"] == {"d": 1}
    keys = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", "create", "delta"],
        cwd=REPO,
        env=one_slot.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert keys.returncode == 0, keys.stderr
    assert keys.stdout.startswith("tpk_")


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("bridge", "ROUTINES", '{"x": {"function": "nope"}}'),
        ("recorder", "TEAMS", "Alpha"),
        ("tasks", "ROUTINES", '{"x": {"function": "tasks.routines:missing"}}'),
    ],
)
def test_bad_configuration_fails_start_up_naming_the_variable(
    one_slot: Instance, module: str, variable: str, value: str
) -> None:
    env = {**one_slot.env, variable: value}
    result = subprocess.run(
        [sys.executable, "-m", module, *(["worker"] if module == "tasks" else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert variable in result.stderr
