"""What authentication costs: single submit and end-to-end measured on two stacks of
their own started the same way, fresh (a broker JIT-cold, empty stores), one with the
passwords and ACLs `make up` sets and one whose Kafka, Postgres and Redis ask no password
(testing/unsecured.py); each in the same order as the main figures (the API alone first,
then the pipeline). API keys stay on in both: the API has no way to turn them off.

Measured against the main stack's own figures instead, "off" came out slower than "on"
(a fresh broker and a second set of stores beside the idle main stack): what differed
was the stack, not authentication."""

from __future__ import annotations

from typing import Any

from bench import http_bench, pipeline
from core.settings import Settings
from testing.unsecured import OwnStackInstance


def figures(main: Settings, env: dict[str, str], count: int, *, secured: bool) -> dict[str, Any]:
    instance = OwnStackInstance(main, "bench_auth", secured=secured, **env)
    with instance.running(["api"]):
        url, key = instance.api_url, instance.admin_key
        found: dict[str, Any] = {
            "single_submit": http_bench.single_submit(url, key, instance.pid("api"))
        }
        instance.up(["recorder", "bridge", "worker-1"])
        pipeline.drain(instance)
        found[f"end_to_end_{count}"] = pipeline.end_to_end(instance, count, main)
    return found


def on_and_off(main: Settings, env: dict[str, str], count: int) -> dict[str, Any]:
    """Off first, then on: a fresh stack each, nothing else of the bench running."""
    off = figures(main, env, count, secured=False)
    on = figures(main, env, count, secured=True)
    return {"off": off, "on": on}
