"""End-to-end throughput (HTTP batch submit → SUCCEEDED in Postgres) against plain
Celery draining the same number of no-op tasks, and how it grows with the task count."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import redis
from sqlalchemy import text

from bench.measure import PeakMemory, percentiles
from bench.plain_celery import COUNTER, WAITS
from core.priority import names as priority_names
from core.schema import TERMINAL_VALUES, sql_values
from core.settings import Settings
from core.status import SUCCESS
from testing.instance import REPO, Instance

BATCH = 1000
TEAMS = ("alpha", "bravo", "charlie")
PRIORITIES = tuple(priority_names())


def _submit(instance: Instance, count: int, clients: int = 4) -> list[str]:
    items = [
        {
            "team": TEAMS[i % len(TEAMS)],
            "routine": "noop",
            "priority": PRIORITIES[(i // len(TEAMS)) % len(PRIORITIES)],
        }
        for i in range(BATCH)
    ]

    def send(size: int) -> list[str]:
        with instance.client() as client:
            response = client.post("/api/v1/tasks/batch", json={"tasks": items[:size]}, timeout=120)
            response.raise_for_status()
            return [r["task"]["task_id"] for r in response.json()["results"] if "task" in r]

    sizes = [BATCH] * (count // BATCH) + ([count % BATCH] if count % BATCH else [])
    with ThreadPoolExecutor(clients) as pool:
        return [task_id for batch in pool.map(send, sizes) for task_id in batch]


def _succeeded_since(instance: Instance, since: float) -> int:
    with instance.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    f"SELECT count(*) FROM tasks WHERE status = {sql_values([SUCCESS])} "
                    "AND created_at >= to_timestamp(:since)"
                ),
                {"since": since},
            ).scalar_one()
        )


def end_to_end(instance: Instance, count: int, main: Settings) -> dict[str, Any]:
    """Submit `count` no-op tasks over HTTP and wait until all are SUCCEEDED in Postgres."""
    since = time.time() - 1
    with PeakMemory([instance.run_dir, main.run_dir]) as memory:
        started = time.perf_counter()
        ids = _submit(instance, count)
        submitted = time.perf_counter() - started
        deadline = time.monotonic() + max(120, count / 50)
        while _succeeded_since(instance, since) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} tasks did not all succeed in time")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    return {
        "tasks": len(ids),
        "seconds": round(elapsed, 2),
        "tasks_per_s": round(len(ids) / elapsed, 1),
        "submit_per_s": round(len(ids) / submitted, 1),
        "peak_rss_mib": memory.peak_mib,
    }


def drain(instance: Instance) -> dict[str, Any]:
    """Start nothing new; wait until every task the API accepted so far has ended, and
    report how fast the pipeline worked through that backlog."""
    started = time.perf_counter()
    deadline = time.monotonic() + 900
    stable, last = 0, -1
    while stable < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain in time")
        time.sleep(0.5)
        with instance.engine.connect() as conn:
            total, unfinished = conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE status NOT IN "
                    f"({TERMINAL_VALUES})) FROM tasks"
                )
            ).one()
        stable = stable + 1 if (unfinished == 0 and total == last) else 0
        last = total
    elapsed = time.perf_counter() - started - 1.5
    return {"tasks": total, "seconds": round(elapsed, 2), "tasks_per_s": round(total / elapsed, 1)}


def plain_broker_url(main: Settings) -> str:
    """The plain-Celery baseline's Redis database (the Flask + Celery peer's too)."""
    return main.redis_url.rsplit("/", 1)[0] + "/14"  # keeps the password, if any


def flush_plain_broker(main: Settings) -> None:
    with redis.Redis.from_url(plain_broker_url(main)) as client:
        client.flushdb()


@contextmanager
def _plain_worker(
    concurrency: int, main: Settings, queued: str = ""
) -> Iterator[tuple[redis.Redis, Callable[[str], None]]]:
    """A plain Celery worker (bench.plain_celery), prefork with the given concurrency, on
    its own Redis database, emptied before and after. `queued` is Python run against it
    before the worker starts; yields the database and a runner for more such code."""
    url = plain_broker_url(main)
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {**os.environ, "PLAIN_BROKER_URL": url}

    def run(code: str) -> None:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)

    if queued:
        run(queued)
    ready = REPO / ".run" / "bench-plain-ready"
    ready.unlink(missing_ok=True)
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "bench.plain_celery", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", "plain",
        ],
        cwd=REPO,
        env={**env, "READY_FILE": str(ready)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        while not ready.exists():
            if worker.poll() is not None:
                raise RuntimeError("the plain Celery worker exited")
            time.sleep(0.05)
        yield client, run
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        client.flushdb()
        client.close()
        ready.unlink(missing_ok=True)


def plain_celery(count: int, concurrency: int, main: Settings) -> dict[str, Any]:
    """Plain Celery draining `count` queued no-op tasks with the same concurrency (queued
    before the worker starts, so only draining is timed)."""
    publish = (
        "from bench.plain_celery import app, noop\n"
        "with app.producer_or_acquire() as p, p.batch(max_size=500):\n"
        f"    [noop.apply_async(producer=p) for _ in range({count})]\n"
    )
    with _plain_worker(concurrency, main, queued=publish) as (client, _):
        started = time.perf_counter()
        deadline = time.monotonic() + max(120, count / 20)
        while int(client.get(COUNTER) or 0) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("plain Celery did not drain in time")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    return {"tasks": count, "seconds": round(elapsed, 2), "tasks_per_s": round(count / elapsed, 1)}


def plain_celery_wait(
    concurrency: int, main: Settings, probes: int = 150, spacing: float = 0.02
) -> dict[str, Any]:
    """Plain Celery's own wait on an idle worker: from `apply_async` to the task starting
    (the baseline of the platform's ACCEPTED→STARTED wait, which adds Kafka and the
    bridge in front of it)."""
    with _plain_worker(concurrency, main) as (client, run):
        send = (
            "import time\n"
            "from bench.plain_celery import stamp\n"
            f"for _ in range({probes}):\n"
            "    stamp.delay(time.time())\n"
            f"    time.sleep({spacing})\n"
        )
        run(send)
        deadline = time.monotonic() + 30
        while client.llen(WAITS) < probes:
            if time.monotonic() > deadline:
                raise TimeoutError("plain Celery did not start every probe in time")
            time.sleep(0.05)
        waits = [float(v) for v in client.lrange(WAITS, 0, -1)]
    return {"probes": probes, "wait_ms": percentiles(waits)}
