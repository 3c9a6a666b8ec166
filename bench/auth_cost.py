"""What authentication costs: the single-submit and end-to-end figures measured again on
an instance whose Kafka, Postgres and Redis ask no password (testing/unsecured.py), in
the same run and the same order as on the secured stack (the API alone first, then the
pipeline). API keys stay on: the API has no way to turn them off."""

from __future__ import annotations

from typing import Any

from bench import http_bench, pipeline
from core.settings import Settings
from testing.unsecured import UnsecuredInstance


def unsecured_figures(main: Settings, env: dict[str, str], count: int) -> dict[str, Any]:
    instance = UnsecuredInstance(main, "bench_open", **env)
    with instance.running(["api"]):
        url, key = instance.api_url, instance.admin_key
        figures: dict[str, Any] = {
            "single_submit": http_bench.single_submit(url, key, instance.pid("api"))
        }
        instance.up(["recorder", "bridge", "worker-1"])
        pipeline.drain(instance)
        figures[f"end_to_end_{count}"] = pipeline.end_to_end(instance, count, main)
    return figures
