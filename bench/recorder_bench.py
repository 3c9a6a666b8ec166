"""Status events recorded per second, against Postgres's own single-row and batched
insert rates measured in the same run."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
from sqlalchemy import text

from core.kafka import make_producer
from core.messages import StatusEvent, utcnow
from core.status import Status
from testing.instance import Instance

PATH = (Status.ACCEPTED, Status.QUEUED, Status.STARTED, Status.SUCCEEDED)


def postgres_baselines(dsn: str, seconds: float = 2.0) -> dict[str, float]:
    """Rows/s of single-row INSERT+COMMIT and of batched executemany, into a scratch table."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE bench_rows (id uuid, status text, at timestamptz)")
        single = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute("INSERT INTO bench_rows VALUES (%s, %s, now())", (uuid.uuid4(), "X"))
            conn.commit()
            single += 1
        single_rate = single / (time.perf_counter() - started)
        rows = [(uuid.uuid4(), "X") for _ in range(5000)]
        batched = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO bench_rows VALUES (%s, %s, now())", rows)
            conn.commit()
            batched += len(rows)
        batched_rate = batched / (time.perf_counter() - started)
    return {
        "single_insert_commit": round(single_rate, 1),
        "batched_executemany": round(batched_rate, 1),
    }


def events_per_second(instance: Instance, tasks: int = 25_000) -> dict[str, Any]:
    """Produce 4 events for each of `tasks` synthetic tasks while the recorder is stopped,
    then start it and time until every event is recorded."""
    settings = instance.settings
    assert settings is not None
    instance.stop_components(["recorder"])
    producer = make_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    start = utcnow()
    for _ in range(tasks):
        task_id = str(uuid.uuid4())
        for step, status in enumerate(PATH):
            event = StatusEvent(
                task_id=task_id, status=status, team="alpha", routine="noop", priority="low",
                at=start + timedelta(milliseconds=step), attempt=0 if step == 0 else 1,
                accepted_at=start, queue=None if step == 0 else "low",
            )  # fmt: skip
            while True:
                try:
                    producer.produce(
                        settings.status_topic, key=task_id.encode(), value=event.encode()
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)
    with instance.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM task_events")).scalar_one()
    expected = before + tasks * len(PATH)
    instance.up(["recorder"])
    began = time.perf_counter()
    with instance.engine.connect() as conn:
        at_start = conn.execute(text("SELECT count(*) FROM task_events")).scalar_one()
    deadline = time.monotonic() + 600
    while True:
        with instance.engine.connect() as conn:
            now = conn.execute(text("SELECT count(*) FROM task_events")).scalar_one()
        if now >= expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the recorder did not catch up in time")
        time.sleep(0.2)
    elapsed = time.perf_counter() - began
    recorded = expected - at_start
    return {"events": tasks * len(PATH), "seconds": round(elapsed, 2),
            "events_per_s": round(recorded / elapsed, 1)}  # fmt: skip
