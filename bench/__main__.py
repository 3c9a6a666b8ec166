"""`python -m bench [--quick]`: measure the platform, each figure against a baseline
measured in the same run, print a table and write bench/results.json.

The measurements run on an isolated platform instance (its own API, recorder, bridge
and worker, with rate limits lifted) on the running stack's Kafka, Postgres and Redis;
the main stack's own platform processes stay idle meanwhile. Benchmarks are not tests:
nothing here fails on a slow figure; goals are reported as met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import auth_cost, http_bench, pipeline, recorder_bench, schedule, waits
from core.priority import names as priority_names
from core.settings import Settings, settings_or_exit
from testing.instance import REPO, Instance

RESULTS = REPO / "bench" / "results.json"
# Short, so that the parked path (Postgres, then the releaser) is measured in seconds.
SCHEDULE_HOLD_SECONDS = 6.0
# End-to-end tasks on each of the two fresh stacks of the auth on/off figures.
AUTH_COUNT = 10_000


def _ratio(ours: float, baseline: float) -> float:
    return round(ours / baseline, 2) if baseline else 0.0


def bench_env(settings: Settings) -> dict[str, str]:
    """The settings of every instance the bench measures: the stack's shape, no limits."""
    return {
        "RATE_LIMIT": "100000000",
        "RATE_BURST": "100000000",
        "LOG_LEVEL": "WARNING",
        "API_WORKERS": str(settings.api_workers),
        "API_THREADS": str(settings.api_threads),
        "WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "TOPIC_PARTITIONS": str(settings.topic_partitions),
        "SCHEDULE_HOLD_SECONDS": str(SCHEDULE_HOLD_SECONDS),
    }


def run(settings: Settings, *, quick: bool, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": quick,
    }
    instance = Instance(settings, "bench", **bench_env(settings))

    def section(name: str, measure: Callable[[], Any], *names: str) -> None:
        """Measure into results[name], or, given `names`, each of the figures `measure`
        returns into its name."""
        console.print(f"[bold]·[/bold] {name}…")
        try:
            measured = measure()
            results.update(zip(names, measured, strict=True) if names else {name: measured})
        except Exception as exc:  # one failed section must not hide the others
            for each in names or (name,):
                results[each] = {"error": f"{type(exc).__name__}: {exc}"}
            console.print(f"  [red]failed:[/red] {exc}")
            traceback.print_exc()

    with instance.running(["api"]):
        assert instance.settings is not None
        url, key = instance.api_url, instance.admin_key
        section("bare_flask_submit", lambda: http_bench.bare_flask(instance.env))
        api_group = instance.pid("api")
        section(
            "single submit against its peer",
            lambda: _submit_against_peer(instance, api_group, settings),
            "single_submit",
            "celery_peer_submit",
        )
        section("batch_submit", lambda: http_bench.batch_submit(url, key))
        # What the API accepted above is recorded and run before the next figures.
        instance.up(["recorder", "bridge", "worker-1"])
        section("drain_backlog", lambda: pipeline.drain(instance))
        task_id = _a_recorded_task(instance)
        section(
            "read against its peer",
            lambda: _read_against_peer(instance, api_group, task_id),
            "single_read",
            "bare_read",
        )
        counts = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
        for count in counts:
            section(f"end_to_end_{count}", _end_to_end(instance, count, settings))
        baseline_count = 10_000
        section(
            "plain_celery",
            lambda: pipeline.plain_celery(baseline_count, settings.worker_concurrency, settings),
        )
        section("high_wait", lambda: waits.high_wait(instance))
        section(
            "plain_celery_wait",
            lambda: pipeline.plain_celery_wait(settings.worker_concurrency, settings),
        )
        weights = {p.value: w for p, w in settings.priority_weights.items()}
        section("shares", lambda: waits.shares(instance, weights))
        section(
            "schedule_accuracy",
            lambda: schedule.schedule_accuracy(instance, SCHEDULE_HOLD_SECONDS),
        )
        section(
            "postgres_baselines",
            lambda: recorder_bench.postgres_baselines(settings.sync_database_url),
        )
        section("status_events", lambda: recorder_bench.events_per_second(instance))
        section("simulator_lateness", _simulator_lateness)
    # After the secured instance has stopped, so that the two never share the machine.
    section("auth", lambda: auth_cost.on_and_off(settings, bench_env(settings), AUTH_COUNT))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return results


def _submit_against_peer(instance: Instance, api_group: int, settings: Settings) -> Any:
    try:
        return http_bench.submit_against_peer(
            instance.api_url, instance.admin_key, api_group, instance.env,
            pipeline.plain_broker_url(settings),
        )  # fmt: skip
    finally:
        pipeline.flush_plain_broker(settings)  # what the peer sent: no worker runs it


def _a_recorded_task(instance: Instance) -> str:
    """A SUCCEEDED task of the drained backlog (the reads measure it)."""
    with instance.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT task_id FROM tasks WHERE status = 'SUCCEEDED' LIMIT 1"
        ).scalar_one()
    return str(found)


def _read_against_peer(instance: Instance, api_group: int, task_id: str) -> Any:
    assert instance.settings is not None
    return http_bench.read_against_peer(
        instance.api_url, instance.admin_key, api_group, instance.env,
        instance.settings.sync_database_url, task_id,
    )  # fmt: skip


def _end_to_end(instance: Instance, count: int, settings: Settings) -> Callable[[], Any]:
    return lambda: pipeline.end_to_end(instance, count, settings)


def _simulator_lateness() -> dict[str, Any]:
    from simulator.bench import measure_lateness

    return dict(measure_lateness(rate=2000, seconds=5))


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, ours, baseline, ratio, goal) for the table."""
    rows: list[tuple[str, str, str, str, str]] = []

    def get(name: str, *path: str) -> Any:
        value: Any = r.get(name, {})
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    e2e = get("end_to_end_10000", "tasks_per_s") or 0
    plain = get("plain_celery", "tasks_per_s") or 0
    rows.append(
        (
            "end-to-end no-op tasks/s (10k)",
            f"{e2e:,.0f}",
            f"{plain:,.0f} plain Celery",
            f"{_ratio(e2e, plain)}x",
            "≥ 1.0x",
        )
    )
    single = get("single_submit", "requests_per_s") or 0
    bare = get("bare_flask_submit", "requests_per_s") or 0
    rows.append(
        (
            "single durable submit req/s",
            f"{single:,.0f}",
            f"{bare:,.0f} bare Flask",
            f"{_ratio(single, bare)}x",
            "≥ 0.8x",
        )
    )
    single_cpu = get("single_submit", "server_cpu_ms_per_request") or 0
    bare_cpu = get("bare_flask_submit", "server_cpu_ms_per_request") or 0
    rows.append(
        (
            "  server CPU ms per request",
            f"{single_cpu}",
            f"{bare_cpu} bare Flask",
            f"{_ratio(bare_cpu, single_cpu)}x",
            "(why the ratio)",
        )
    )
    rows.extend(_peer_rows(get))
    batch = get("batch_submit", "tasks_per_s") or 0
    rows.append(
        (
            "batch submit tasks/s",
            f"{batch:,.0f}",
            "goal 20,000",
            f"{_ratio(batch, 20000)}x",
            "≥ 20,000/s",
        )
    )
    idle = get("high_wait", "idle_ms") or {}
    flood = get("high_wait", "under_low_flood_ms") or {}
    plain_wait = get("plain_celery_wait", "wait_ms") or {}
    rows.append(
        (
            "high wait idle p50/p99 ms",
            f"{idle.get('p50')}/{idle.get('p99')}",
            f"{plain_wait.get('p50')}/{plain_wait.get('p99')} plain Celery send→start",
            f"{_ratio(idle.get('p50') or 0, plain_wait.get('p50') or 0)}x p50",
            "p50 ≤ 5, p99 ≤ 25",
        )
    )
    rows.append(
        (
            "high wait under low flood p90 ms",
            f"{flood.get('p90')}",
            f"idle p90 {idle.get('p90')} + {get('high_wait', 'low_task_ms')} + 10",
            "met" if get("high_wait", "met") else "not met",
            "≤ idle p90 + low + 10",
        )
    )
    share = get("shares", "share_pct") or {}
    target = get("shares", "weights_pct") or {}
    priorities = priority_names()
    rows.append(
        (
            f"shares under backlog {'/'.join(p[0] for p in priorities)} %",
            "/".join(str(share.get(p)) for p in priorities),
            "/".join(str(target.get(p)) for p in priorities) + " weights",
            "met" if get("shares", "met") else "not met",
            f"±10 points, {priorities[-1]} > 0",
        )
    )
    for name, what in (("held_1000", "held"), ("held_3000", "held"), ("parked_3000", "parked")):
        figure = get("schedule_accuracy", name) or {}
        late = figure.get("late_ms") or {}
        rows.append(
            (
                f"start after run_at p50/p99 ms, {figure.get('tasks', 0):,} due in 1 s ({what})",
                f"{late.get('p50')}/{late.get('p99')}",
                f"{figure.get('within_1s_pct')} % within 1 s, {figure.get('early')} early",
                "",
                "99 % ≤ 1 s, none early",
            )
        )
    events = get("status_events", "events_per_s") or 0
    pg = get("postgres_baselines", "single_insert_commit") or 0
    pg_batch = get("postgres_baselines", "batched_executemany") or 0
    rows.append(
        (
            "status events recorded/s",
            f"{events:,.0f}",
            f"{pg:,.0f} single / {pg_batch:,.0f} batched rows/s",
            f"{_ratio(events, pg)}x single",
            "≥ 10,000/s",
        )
    )
    lateness = get("simulator_lateness", "lateness_ms") or {}
    cpu = get("simulator_lateness", "cpu_seconds_per_second")
    rows.append(
        (
            "simulator lateness p99 @2,000/s",
            f"{lateness.get('p99')} ms, {cpu} core",
            "goal 10 ms, 1 core",
            "",
            "p99 ≤ 10 ms, ≤ 1 core",
        )
    )
    rows.extend(_auth_rows(get))
    for count in (1_000, 10_000, 100_000):
        figure = r.get(f"end_to_end_{count}")
        if isinstance(figure, dict) and "tasks_per_s" in figure:
            peak = figure.get("peak_rss_mib", {})
            top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items()))
            rows.append(
                (
                    f"growth: {count:,} tasks",
                    f"{figure['tasks_per_s']:,.0f}/s",
                    f"peak MiB: {top}",
                    "",
                    "flat",
                )
            )
    return rows


def _peer_rows(get: Callable[..., Any]) -> list[tuple[str, str, str, str, str]]:
    """Single submit and read against the peers a team would build (bench/peers.py)."""
    rows = []
    for figure, ours, peer, name, goal in (
        ("single submit", "single_submit", "celery_peer_submit", "Flask+Celery", "≥ 1.0x"),
        ("GET /api/v1/tasks/<id>", "single_read", "bare_read", "bare read", "≥ 0.8x"),
    ):
        rate, peer_rate = get(ours, "requests_per_s") or 0, get(peer, "requests_per_s") or 0
        cpu, peer_cpu = (get(s, "server_cpu_ms_per_request") or 0 for s in (ours, peer))
        p99, peer_p99 = (get(s, "latency_ms", "99") or 0 for s in (ours, peer))
        rounds = len(get(ours, "rounds_requests_per_s") or []) or 1
        rows += [
            (f"{figure} req/s (median of {rounds})", f"{rate:,.0f}", f"{peer_rate:,.0f} {name}",
             f"{_ratio(rate, peer_rate)}x", goal),
            ("  server CPU ms per request", f"{cpu}", f"{peer_cpu} {name}",
             f"{_ratio(cpu, peer_cpu)}x", "≤ 1.0x" if ours == "single_submit" else ""),
            ("  p99 ms", f"{p99}", f"{peer_p99} {name}", f"{_ratio(p99, peer_p99)}x", "≤ 1.0x"),
        ]  # fmt: skip
    return rows


def _auth_rows(get: Callable[..., Any]) -> list[tuple[str, str, str, str, str]]:
    """A fresh secured stack against a fresh one whose stores ask no password."""
    rows = []
    for figure, (section, field) in {
        "auth on/off: single submit req/s": ("single_submit", "requests_per_s"),
        "auth on/off: server CPU ms per submit": ("single_submit", "server_cpu_ms_per_request"),
        f"auth on/off: end-to-end tasks/s ({AUTH_COUNT:,})": (
            f"end_to_end_{AUTH_COUNT}",
            "tasks_per_s",
        ),
    }.items():
        on = get("auth", "on", section, field) or 0
        off = get("auth", "off", section, field) or 0
        rows.append((figure, f"{on:,} on", f"{off:,} off", f"{_ratio(on, off)}x", "(the cost)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 100k-task run")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    console = Console(width=max(140, shutil.get_terminal_size().columns))
    results = run(settings, quick=args.quick, console=console)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = Table(title="make bench: each figure against its baseline, measured in this run")
    for column in ("figure", "ours", "baseline", "ratio", "goal"):
        table.add_column(column)
    for row in summary_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(f"details: {Path(RESULTS).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
