"""Fault injection on a whole stack of its own (Kafka, Postgres, Redis and the platform).

While a few thousand tasks are in flight: kill -9 the bridge, kill -9 a Celery worker
(and, separately, one of another worker's pool processes), kill -9 the recorder, kill -9
the API (gunicorn and its workers), kill -9 the Kafka broker, shut Redis down without
saving (and throw its data away), restart Postgres; then `python -m ops up` brings
everything back. Every accepted task must reach exactly one terminal status, SUCCEEDED
(every task here is meant to succeed), with no duplicate terminal events, and start no
more often than its routine says plus the runs the two worker kills interrupted. Every
submit must be answered 202, or 503 within the produce timeout while Kafka is away: any
other answer, for the batch or for one item, is a failure, and so is a request that
gets no answer, except while the API itself is down. The test's waits share one
deadline inside its pytest timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from app.auth import create_key
from ops.supervisor import Supervisor
from tests.faults.harness import Exchange, IsolatedStack, Load, isolated_stack, outcome, timelines
from tests.helpers import wait_for
from tests.isolated import ops

pytestmark = [pytest.mark.own_stack, pytest.mark.stack, pytest.mark.slow]

COMPONENTS = ["kafka", "postgres", "redis", "api", "recorder", "bridge", "worker-1", "worker-2"]
MINIMUM = 2000
# Accepted tasks to wait for between two faults (was 200-300, ~2-3 s of load): the load
# goes on, unpaced by the steps, through every fault and every `up`, so each fault still
# meets tasks in flight; GAP more show the platform taking work again before the next.
# The 100 accepted while a killed component is away stay as they were.
GAP = 120
TIMEOUT = 900  # the whole test: the stack's start, the faults, the drain and `ops down`
TEARDOWN_RESERVE = 90
PRODUCE_TIMEOUT = 2.0  # KAFKA_PRODUCE_TIMEOUT_SECONDS of this stack
# A 503 comes once the produce timeout has passed; the rest of a batch's request
# (validation, idempotency lookups, the accepted cache) on a loaded 2-core box.
ANSWER_SLACK = 3.0
WORKER_CONCURRENCY = 2
TERMINAL = ("SUCCEEDED", "FAILED", "DEAD_LETTERED")


class World(IsolatedStack):
    def pool(self, component: str) -> frozenset[int]:
        """The PIDs of a worker's pool processes (its group, less the main process)."""
        main = self.pid(component)
        return frozenset(Supervisor(self.run_dir).group_members(main)) - {main}


class Faults(dict[str, tuple[object, object]]):
    """Each fault with what was seen before and after it, and when it was over (UTC time
    of day, to read beside the timelines a failure prints)."""

    def __init__(self) -> None:
        super().__init__()
        self.done_at: dict[str, str] = {}

    def __setitem__(self, fault: str, seen: tuple[object, object]) -> None:
        self.done_at[fault] = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        super().__setitem__(fault, seen)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with isolated_stack(
        World,
        "faults",
        COMPONENTS,
        timeout=TIMEOUT,
        teardown_reserve=TEARDOWN_RESERVE,
        WORKERS="2",
        WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
        KAFKA_PRODUCE_TIMEOUT_SECONDS=str(PRODUCE_TIMEOUT),
        keep_logs=True,  # in .run/isolated/faults-logs
    ) as world:
        yield world


@pytest.mark.timeout(TIMEOUT)
def test_every_accepted_task_ends_exactly_once_through_crashes_and_outages(world: World) -> None:
    engine = create_engine(world.settings.database_url, pool_pre_ping=True)
    try:
        _run(world, engine)
    finally:
        engine.dispose()


def _run(world: World, engine: Engine) -> None:
    budget = world.budget
    key = create_key(engine, team=None, admin=True)[1]
    load = Load(f"http://127.0.0.1:{world.settings.api_port}", key, threads=2, rate=120.0)

    def more(count: int) -> None:
        load.wait_for_more(count, timeout=budget.left(120))

    load.start()
    # Each fault with what was seen before and after it: what it hits was replaced (a new
    # PID, a new pool process, a Postgres started anew) or lost (Redis's data).
    faults = Faults()
    # When Kafka and the API were away: [killed, back] (monotonic).
    kafka_away: tuple[float, float] = (0.0, 0.0)
    api_away: tuple[float, float] = (0.0, 0.0)

    def kill_and_bring_back(component: str, fault: str) -> None:
        killed = world.kill9(component).pid
        more(100)
        world.up()
        faults[fault] = (killed, world.pid(component))

    try:
        more(GAP)
        kill_and_bring_back("bridge", "kill -9 bridge")

        more(GAP)
        kill_and_bring_back("worker-1", "kill -9 worker-1 (main process and pool)")

        more(GAP)
        pool = world.pool("worker-2")
        child = min(pool)
        os.kill(child, signal.SIGKILL)

        def replaced() -> frozenset[int] | None:
            now = world.pool("worker-2")
            return now if child not in now and len(now) == len(pool) else None

        renewed = wait_for(
            replaced, timeout=budget.left(60), what="worker-2 to replace its pool process"
        )
        faults["kill -9 one pool process of worker-2"] = (pool, renewed)

        more(GAP)
        kill_and_bring_back("recorder", "kill -9 recorder")

        more(GAP)
        api_killed_at = time.monotonic()
        killed = world.kill9("api").pid
        api_away = (api_killed_at, world.up())
        faults["kill -9 api (gunicorn and its workers)"] = (killed, world.pid("api"))

        more(GAP)
        kafka_killed_at = time.monotonic()
        killed = world.kill9("kafka").pid
        wait_for(
            lambda: any(e.unavailable for e in load.between(kafka_killed_at, time.monotonic())),
            timeout=budget.left(60),
            what=f"a 503 while Kafka is away (answers so far: {load.summary()})",
        )
        kafka_away = (kafka_killed_at, world.up())
        faults["kill -9 kafka"] = (killed, world.pid("kafka"))

        more(GAP)
        client = redis.Redis.from_url(world.settings.redis_url)
        marker = f"faults:marker:{uuid.uuid4().hex}"
        client.set(marker, "written before the shutdown")
        stored = client.exists(marker)
        with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it goes
            client.shutdown(nosave=True)
        wait_for(
            lambda: Supervisor(world.run_dir).tracked("redis") is None,
            timeout=budget.left(30),
            what="redis to be gone",
        )
        # Without saving *and* without its append-only file: the broker's data is lost.
        shutil.rmtree(world.run_dir / "redis", ignore_errors=True)
        world.up()
        with redis.Redis.from_url(world.settings.redis_url) as client:
            faults["redis shut down without saving, its data thrown away"] = (
                stored,
                client.exists(marker),
            )

        more(GAP)
        started_at = _postmaster_start(engine)
        restarted = ops(world.env, "restart", "postgres", timeout=budget.left(120))
        assert restarted.returncode == 0, restarted.stderr
        faults["postgres restarted"] = (started_at, _postmaster_start(engine))
        more(GAP)
    finally:
        load.stop()
    world.up()  # anything still down comes back

    ids = list(load.accepted)
    assert len(ids) >= MINIMUM
    params = {"ids": ids, "terminal": list(TERMINAL)}

    def all_terminal() -> bool:
        with engine.connect() as conn:
            finished = conn.execute(
                text(
                    "SELECT count(*) FROM tasks WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                    "AND status = ANY(:terminal)"
                ),
                params,
            ).scalar_one()
        return finished == len(ids)

    drain_started = time.monotonic()
    wait_for(
        all_terminal, timeout=budget.left(400), interval=1, what=f"all {len(ids)} tasks to end"
    )
    drain = time.monotonic() - drain_started
    with engine.connect() as conn:
        statuses, terminal_per_task, starts = outcome(conn, ids, TERMINAL)
        terminal_events = sum(terminal_per_task.values())
        odd = conn.execute(
            text(
                "SELECT task_id::text FROM tasks WHERE task_id = ANY(CAST(:ids AS uuid[])) "
                "AND status <> 'SUCCEEDED'"
            ),
            params,
        ).scalars()
        odd_starts = [t for t in ids if starts.get(t, 0) != load.accepted[t]]
        unhappy = timelines(conn, [*odd, *odd_starts])
        never_started = [t for t in ids if starts.get(t, 0) < load.accepted[t]]
        # Named in the assertion: the printed timelines above are cut to the first five.
        never_started_timelines = timelines(conn, never_started)
    exchanges = list(load.exchanges)
    failures = [f for e in exchanges for f in e.failures()]

    def around(window: tuple[float, float], e: Exchange) -> bool:
        # A request begun up to an answer's time before the kill may meet it.
        return window[0] - PRODUCE_TIMEOUT - ANSWER_SLACK <= e.started <= window[1]

    unanswered = [e for e in exchanges if e.status is None]
    unanswered_elsewhere = [e for e in unanswered if not around(api_away, e)]
    unavailable = [e for e in exchanges if e.unavailable]
    # After `up` returns, the API's producer may still be in its reconnect backoff.
    kafka_window = (kafka_away[0], kafka_away[1] + PRODUCE_TIMEOUT + ANSWER_SLACK)
    unavailable_elsewhere = [e for e in unavailable if not around(kafka_window, e)]
    slowest = max(e.took for e in exchanges if e.status is not None)
    slowest_503 = max((e.took for e in unavailable), default=0.0)
    # A run is started again only when the worker running it died: worker-1's slots, and
    # the one pool process killed in worker-2.
    extra_starts = {
        t: starts[t] - expected
        for t, expected in load.accepted.items()
        if starts.get(t, 0) > expected
    }
    done = "; ".join(f"{fault} (over at {faults.done_at[fault]})" for fault in faults)
    print(
        f"\nfaults: {len(faults)} ({done})\n"
        f"accepted: {len(ids)} (all ended {drain:.0f}s after the load stopped); "
        f"statuses: {statuses}; terminal events: {terminal_events}; "
        f"STARTED events: {sum(starts.values())} (expected {sum(load.accepted.values())}; "
        f"started again: {extra_starts})\n"
        f"answers: {load.summary()}; slowest answer {slowest:.2f}s, slowest 503 "
        f"{slowest_503:.2f}s; 503s while Kafka was away: {sum(e.unavailable for e in unavailable)}"
        f"; unanswered while the API was away: {len(unanswered) - len(unanswered_elsewhere)}"
    )
    if unhappy:
        print("\n".join(unhappy))
    assert statuses == {"SUCCEEDED": len(ids)}
    assert terminal_events == len(ids)  # exactly one terminal event per task
    assert never_started == [], never_started_timelines
    assert sum(extra_starts.values()) <= WORKER_CONCURRENCY + 1, extra_starts
    assert failures == []
    assert unanswered_elsewhere == []
    assert unavailable_elsewhere == [], [round(e.started - kafka_away[0], 1) for e in unavailable]
    assert slowest_503 <= PRODUCE_TIMEOUT + ANSWER_SLACK
    assert slowest <= PRODUCE_TIMEOUT + ANSWER_SLACK  # never a hang
    assert {name: seen for name, seen in faults.items() if seen[0] == seen[1]} == {}


def _postmaster_start(engine: Engine) -> object:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
