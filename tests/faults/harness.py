"""What the fault tests share: a whole stack of their own, a client load, a time budget,
and the story of a task.

The stack: Kafka, Postgres, Redis and the platform on ports and in a run folder of its
own (tests.isolated), started with `python -m ops up` and stopped with `ops down`.

The load: threads that submit batches of tasks as a careful client would, and keep every
exchange (when it started, how long it took, what came back).

Every item carries an idempotency key. An item answered 503, or a batch that got no
answer at all (the connection dropped), is sent again with the same keys: the platform
must then name the same task, never a second one. Tasks that got a 202 are `accepted`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
from sqlalchemy import Connection, text

from core.settings import Settings
from ops.supervisor import Supervisor
from testing.secret_scan import secrets_in_logs
from tests.helpers import wait_for
from tests.isolated import PORT_VARIABLES, isolated_env, isolated_run_dir, ops

TEAMS = ("alpha", "bravo", "charlie")
PRIORITIES = ("high", "medium", "low")


class Budget:
    """What is left of the test's time, so every wait ends before pytest-timeout would."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        left = self.end - time.monotonic()
        assert left > 1, "the test's time budget is spent"
        return min(cap, left)


def isolated_settings(env: Mapping[str, str], *names: str) -> Settings:
    """The settings of a stack started with `env` (tests.isolated.isolated_env), as far as
    a test needs them: its ports, its run folder, and the variables `names`."""
    fields: dict[str, Any] = {
        name.lower(): env[name] for name in (*PORT_VARIABLES, "RUN_DIR", *names)
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class Killed(NamedTuple):
    pid: int  # the PID it had
    at: float  # time.monotonic() right after the signal


@dataclass
class IsolatedStack:
    """A stack of its own whose every wait fits in the test's time budget."""

    env: dict[str, str]
    run_dir: Path
    settings: Settings
    budget: Budget
    components: tuple[str, ...]  # what `up` starts (a kind names all of it: `bridge`)

    def up(self) -> float:
        """`python -m ops up` (whatever is not running); returns when it returned
        (monotonic)."""
        result = ops(self.env, "up", *self.components, timeout=self.budget.left(300))
        assert result.returncode == 0, result.stdout + result.stderr
        return time.monotonic()

    def pid(self, component: str) -> int:
        tracked = Supervisor(self.run_dir).tracked(component)
        assert tracked is not None, f"{component} is not running"
        return tracked.pid

    def kill9(self, component: str) -> Killed:
        """kill -9 the component's process group, and wait until it is gone."""
        pid = self.pid(component)
        os.killpg(pid, signal.SIGKILL)
        at = time.monotonic()
        wait_for(
            lambda: Supervisor(self.run_dir).tracked(component) is None,
            timeout=self.budget.left(30),
            what=f"{component} to be gone",
        )
        return Killed(pid, at)


S = TypeVar("S", bound=IsolatedStack)


@contextmanager
def isolated_stack(
    kind: type[S],
    name: str,
    components: Sequence[str],
    *,
    timeout: float,
    teardown_reserve: float,
    keep_logs: bool = False,
    **variables: str,
) -> Iterator[S]:
    """A stack of its own with the settings `variables`, started with `components`. Its
    waits share a budget of `timeout - teardown_reserve` seconds (`timeout`: the test's);
    at the end it is stopped within the reserve and its run folder removed. With
    `keep_logs`, the logs of the last run stay in `.run/isolated/<name>-logs`."""
    budget = Budget(timeout - teardown_reserve)
    run_dir = isolated_run_dir(f"{name}-{os.getpid()}")
    env = isolated_env(run_dir, **variables)
    stack = kind(env, run_dir, isolated_settings(env, *variables), budget, tuple(components))
    try:
        stack.up()
        yield stack
    finally:
        ops(env, "down", timeout=teardown_reserve - 10)
        leaked = secrets_in_logs(run_dir)
        if keep_logs:
            _keep_logs(run_dir, run_dir.parent / f"{name}-logs")
        shutil.rmtree(run_dir, ignore_errors=True)
    # Not in `finally`: a failed test's own error is the one to report.
    assert leaked == [], "secrets in the isolated stack's logs:\n" + "\n".join(leaked)


def _keep_logs(run_dir: Path, keep: Path) -> None:
    """The run's logs (each component's, and each Kafka node's server.log) stay in `keep`
    for a post-mortem; the next run replaces them."""
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(run_dir / "logs", keep, ignore_dangling_symlinks=True)
    for log in run_dir.glob("kafka-*/server.log"):
        shutil.copy(log, keep / f"{log.parent.name}.server.log")


@dataclass(frozen=True)
class Exchange:
    """One POST /api/v1/tasks/batch and what it got."""

    started: float  # time.monotonic()
    took: float
    status: int | None  # None: no answer (transport error)
    items: tuple[int, ...] = ()  # each item's status code (the batch's own on a whole 503)
    error: str = ""

    @property
    def unavailable(self) -> int:
        """How many items were answered 503."""
        return sum(1 for code in self.items if code == 503)

    def failures(self) -> list[str]:
        """Anything but 202 and 503, per item, and a batch answered neither 202 nor 503."""
        found = [f"item {code}" for code in self.items if code not in (202, 503)]
        if self.status is not None and self.status not in (202, 503):
            found.append(f"batch {self.status}")
        return found


def starts_expected(item: dict[str, object]) -> int:
    """How many times a task made from `item` starts when nothing goes wrong."""
    if item["routine"] == "fail":
        payload = item.get("payload")
        assert isinstance(payload, dict)
        return 1 + int(payload["times"])
    return 1


def default_mix() -> dict[str, object]:
    roll = random.random()
    if roll < 0.45:
        return {"routine": "noop"}
    if roll < 0.8:
        return {"routine": "sleep", "payload": {"ms": random.randint(5, 40)}}
    if roll < 0.9:
        return {"routine": "fail", "payload": {"times": 1}}
    return {"routine": "cpu", "payload": {"iterations": 3000}}


@dataclass
class Load:
    url: str
    key: str
    threads: int = 2
    batch: int = 20
    rate: float = 150.0  # tasks per second, all threads together, when answers are prompt
    timeout: float = 30.0  # a request not answered by then is a hang
    accepted: dict[str, int] = field(default_factory=dict)  # task_id -> starts expected
    exchanges: list[Exchange] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=self.timeout + 5)
            assert not thread.is_alive(), "a load thread is stuck"

    def wait_for_more(self, count: int, timeout: float) -> None:
        target = len(self.accepted) + count
        wait_for(
            lambda: len(self.accepted) >= target,
            timeout=timeout,
            interval=0.1,
            what=f"{count} more accepted tasks (answers so far: {self.summary()})",
        )

    def between(self, start: float, end: float) -> list[Exchange]:
        """Exchanges that started in [start, end] (monotonic times)."""
        return [e for e in list(self.exchanges) if start <= e.started <= end]

    def summary(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for exchange in list(self.exchanges):
            if exchange.status is None:
                counts[f"error {exchange.error}"] += 1
                continue
            counts[f"batch {exchange.status}"] += 1
            for code in exchange.items:
                counts[f"item {code}"] += 1
        return dict(counts)

    def _new_items(self, count: int) -> list[dict[str, object]]:
        items = []
        for _ in range(count):
            item = default_mix()
            item["team"] = random.choice(TEAMS)
            item["priority"] = random.choice(PRIORITIES)
            item["idempotency_key"] = uuid.uuid4().hex
            items.append(item)
        return items

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        pause = self.threads * self.batch / self.rate
        pending: list[dict[str, object]] = []  # to send again, with the same keys
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as client:
            while not self._stop.is_set():
                items = pending + self._new_items(max(0, self.batch - len(pending)))
                pending = []
                started = time.monotonic()
                try:
                    response = client.post("/api/v1/tasks/batch", json={"tasks": items})
                except httpx.HTTPError as exc:
                    took = time.monotonic() - started
                    self.exchanges.append(Exchange(started, took, None, error=type(exc).__name__))
                    pending = items
                    self._stop.wait(pause)
                    continue
                took = time.monotonic() - started
                if response.status_code == 202:
                    results = response.json()["results"]
                    codes = tuple(r["status_code"] for r in results)
                    for item, result in zip(items, results, strict=True):
                        if result["status_code"] == 202:
                            task_id = result["task"]["task_id"]
                            self.accepted[task_id] = starts_expected(item)
                        elif result["status_code"] == 503:
                            pending.append(item)
                else:
                    codes = (response.status_code,) * len(items)
                    if response.status_code == 503:
                        pending = items
                self.exchanges.append(Exchange(started, took, response.status_code, codes))
                self._stop.wait(max(0.0, pause - took))


class Outcome(NamedTuple):
    """What became of a set of tasks."""

    statuses: dict[str, int]  # how many are in each status
    terminal_events: dict[str, int]  # task id -> its terminal events (none: absent)
    starts: dict[str, int]  # task id -> its STARTED events (none: absent)


def outcome(conn: Connection, task_ids: list[str], terminal: Sequence[str]) -> Outcome:
    """The statuses of these tasks, and each one's events of a `terminal` status and
    STARTED events."""
    params = {"ids": task_ids, "terminal": list(terminal)}
    statuses = conn.execute(
        text(
            "SELECT status, count(*) FROM tasks "
            "WHERE task_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
        ),
        params,
    ).all()

    def per_task(condition: str) -> dict[str, int]:
        rows = conn.execute(
            text(
                "SELECT task_id::text, count(*) FROM task_events "
                f"WHERE task_id = ANY(CAST(:ids AS uuid[])) AND {condition} GROUP BY task_id"
            ),
            params,
        ).all()
        return {task_id: count for task_id, count in rows}

    return Outcome(
        {status: count for status, count in statuses},
        per_task("status = ANY(:terminal)"),
        per_task("status = 'STARTED'"),
    )


def timelines(conn: Connection, task_ids: list[str], limit: int = 5) -> list[str]:
    """A line per task (the first `limit`): its routine, status, error and events
    (status, attempt, UTC time of day, detail), for a failure message."""
    lines = []
    for task_id in task_ids[:limit]:
        task = conn.execute(
            text("SELECT routine, status, error FROM tasks WHERE task_id = CAST(:t AS uuid)"),
            {"t": task_id},
        ).one_or_none()
        events = conn.execute(
            text(
                "SELECT status, attempt, to_char(at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), detail "
                "FROM task_events WHERE task_id = CAST(:t AS uuid) ORDER BY at"
            ),
            {"t": task_id},
        ).all()
        lines.append(
            f"{task_id} {tuple(task) if task else '(no row)'}: {[tuple(e) for e in events]}"
        )
    return lines
