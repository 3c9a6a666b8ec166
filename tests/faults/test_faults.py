"""Fault injection on a whole stack of its own (Kafka, Postgres, Redis and the platform).

While a few thousand tasks are in flight: kill -9 the bridge, kill -9 a Celery worker
(and, separately, one of another worker's pool processes), kill -9 the Kafka broker,
shut Redis down without saving (and throw its data away), restart Postgres; then
`python -m ops up` brings everything back. Every accepted task must reach exactly one
terminal status, SUCCEEDED (every task here is meant to succeed), with no duplicate
terminal events; the API must never answer 5xx other than a prompt 503 while Kafka is
away.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from app.auth import create_key
from core.settings import Settings
from ops.supervisor import Supervisor
from tests.helpers import wait_for
from tests.isolated import isolated_env, isolated_run_dir, ops

pytestmark = [pytest.mark.stack, pytest.mark.slow]

COMPONENTS = ["kafka", "postgres", "redis", "api", "recorder", "bridge", "worker-1", "worker-2"]
MINIMUM = 2000


@dataclass
class World:
    env: dict[str, str]
    run_dir: Path
    settings: Settings

    def up(self) -> None:
        result = ops(self.env, "up", *COMPONENTS, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr

    def pid(self, component: str) -> int:
        tracked = Supervisor(self.run_dir).tracked(component)
        assert tracked is not None, f"{component} is not running"
        return tracked.pid

    def kill9(self, component: str) -> int:
        """kill -9 the component's process group; returns the PID it had."""
        pid = self.pid(component)
        os.killpg(pid, signal.SIGKILL)
        wait_for(
            lambda: Supervisor(self.run_dir).tracked(component) is None,
            timeout=30,
            what=f"{component} to be gone",
        )
        return pid

    def pool(self, component: str) -> frozenset[int]:
        """The PIDs of a worker's pool processes (its group, less the main process)."""
        main = self.pid(component)
        return frozenset(Supervisor(self.run_dir).group_members(main)) - {main}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    run_dir = isolated_run_dir("faults")
    env = isolated_env(
        run_dir, WORKERS="2", WORKER_CONCURRENCY="2", KAFKA_PRODUCE_TIMEOUT_SECONDS="2"
    )
    port = env["POSTGRES_PORT"]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_port=int(env["KAFKA_PORT"]),
        postgres_port=int(port),
        redis_port=int(env["REDIS_PORT"]),
        api_port=int(env["API_PORT"]),
        run_dir=run_dir,
    )
    world = World(env, run_dir, settings)
    try:
        world.up()
        yield world
    finally:
        ops(env, "down")
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class Load:
    """Submits batches of tasks (at most ~250 a second) until stopped, keeping what happened."""

    url: str
    key: str
    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def items(self, count: int) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for _ in range(count):
            roll = random.random()
            if roll < 0.55:
                item = {"routine": "sleep", "payload": {"ms": random.randint(10, 60)}}
            elif roll < 0.8:
                item = {"routine": "noop"}
            elif roll < 0.9:
                item = {"routine": "fail", "payload": {"times": 1}}
            else:
                item = {"routine": "cpu", "payload": {"iterations": 3000}}
            item["team"] = random.choice(["alpha", "bravo", "charlie"])
            item["priority"] = random.choice(["high", "medium", "low"])
            out.append(item)
        return out

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=20) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/api/v1/tasks/batch", json={"tasks": self.items(25)})
                except httpx.HTTPError as exc:
                    self.answers[f"error {type(exc).__name__}"] += 1
                    time.sleep(0.2)
                    continue
                self.answers[str(response.status_code)] += 1
                if response.status_code == 202:
                    for result in response.json()["results"]:
                        self.answers[f"item {result['status_code']}"] += 1
                        if result["status_code"] == 202:
                            self.accepted.append(result["task"]["task_id"])
                time.sleep(0.1)

    def wait_for_more(self, count: int) -> None:
        target = len(self.accepted) + count
        wait_for(
            lambda: len(self.accepted) >= target,
            timeout=120,
            what=f"{count} more accepted tasks",
        )


def test_every_accepted_task_ends_exactly_once_through_crashes_and_outages(world: World) -> None:
    engine = create_engine(world.settings.database_url, pool_pre_ping=True)
    try:
        _run(world, engine)
    finally:
        engine.dispose()


def _run(world: World, engine: Engine) -> None:
    key = create_key(engine, team=None, admin=True)[1]
    load = Load(f"http://127.0.0.1:{world.settings.api_port}", key)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    # Each fault with what was seen before and after it: what it hits was replaced (a new
    # PID, a new pool process, a Postgres started anew) or lost (Redis's data).
    faults: dict[str, tuple[object, object]] = {}
    try:
        load.wait_for_more(300)
        killed = world.kill9("bridge")
        load.wait_for_more(100)
        world.up()
        faults["kill -9 bridge"] = (killed, world.pid("bridge"))

        load.wait_for_more(300)
        killed = world.kill9("worker-1")
        load.wait_for_more(100)
        world.up()
        faults["kill -9 worker-1 (main process and pool)"] = (killed, world.pid("worker-1"))

        load.wait_for_more(200)
        pool = world.pool("worker-2")
        child = min(pool)
        os.kill(child, signal.SIGKILL)

        def replaced() -> frozenset[int] | None:
            now = world.pool("worker-2")
            return now if child not in now and len(now) == len(pool) else None

        renewed = wait_for(replaced, timeout=60, what="worker-2 to replace its pool process")
        faults["kill -9 one pool process of worker-2"] = (pool, renewed)

        load.wait_for_more(300)
        killed = world.kill9("kafka")
        wait_for(
            lambda: load.answers["503"] + load.answers["item 503"] > 0,
            timeout=60,
            what=f"a 503 while Kafka is away (answers so far: {load.answers})",
        )
        world.up()
        faults["kill -9 kafka"] = (killed, world.pid("kafka"))

        load.wait_for_more(300)
        client = redis.Redis(port=world.settings.redis_port)
        marker = f"faults:marker:{uuid.uuid4().hex}"
        client.set(marker, "written before the shutdown")
        stored = client.exists(marker)
        with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it goes
            client.shutdown(nosave=True)
        wait_for(
            lambda: Supervisor(world.run_dir).tracked("redis") is None,
            timeout=30,
            what="redis to be gone",
        )
        # Without saving *and* without its append-only file: the broker's data is lost.
        shutil.rmtree(world.run_dir / "redis", ignore_errors=True)
        world.up()
        with redis.Redis(port=world.settings.redis_port) as client:
            faults["redis shut down without saving, its data thrown away"] = (
                stored,
                client.exists(marker),
            )

        load.wait_for_more(300)
        started_at = _postmaster_start(engine)
        restarted = ops(world.env, "restart", "postgres")
        assert restarted.returncode == 0, restarted.stderr
        faults["postgres restarted"] = (started_at, _postmaster_start(engine))
        load.wait_for_more(200)
    finally:
        load.stop.set()
        thread.join(timeout=30)
    world.up()  # anything still down comes back

    ids = list(load.accepted)
    assert len(ids) >= MINIMUM

    def all_terminal() -> bool:
        with engine.connect() as conn:
            unfinished = conn.execute(
                text(
                    "SELECT count(*) FROM tasks WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                    "AND status IN ('SUCCEEDED', 'FAILED', 'DEAD_LETTERED')"
                ),
                {"ids": ids},
            ).scalar_one()
        return unfinished == len(ids)

    wait_for(all_terminal, timeout=400, interval=1, what=f"all {len(ids)} tasks to end")
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text(
                    "SELECT status, count(*) FROM tasks "
                    "WHERE task_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
                ),
                {"ids": ids},
            ).all()
        )
        terminal_events = conn.execute(
            text(
                "SELECT count(*) FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                "AND status IN ('SUCCEEDED', 'FAILED', 'DEAD_LETTERED')"
            ),
            {"ids": ids},
        ).scalar_one()
        executions = conn.execute(
            text(
                "SELECT count(*) FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                "AND status = 'STARTED'"
            ),
            {"ids": ids},
        ).scalar_one()
    server_errors = {k: v for k, v in load.answers.items() if k.startswith("5") and k != "503"}
    print(
        f"\nfaults: {len(faults)} ({'; '.join(faults)})\n"
        f"accepted: {len(ids)}; statuses: {statuses}; terminal events: {terminal_events}; "
        f"STARTED events: {executions}; answers: {dict(load.answers)}"
    )
    assert statuses == {"SUCCEEDED": len(ids)}
    assert terminal_events == len(ids)  # exactly one terminal event per task
    assert server_errors == {}
    assert {name: seen for name, seen in faults.items() if seen[0] == seen[1]} == {}


def _postmaster_start(engine: Engine) -> object:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
