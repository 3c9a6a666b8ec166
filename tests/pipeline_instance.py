"""Isolated instances running the whole pipeline with routines of a test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from core.settings import Settings
from tests.instance import Instance

PIPELINE = ["api", "recorder", "bridge", "worker-1"]


@contextmanager
def pipeline_instance(
    stack: Settings, name: str, routines: dict[str, Any], **env: str
) -> Iterator[Instance]:
    """An instance named `name` with one worker process, ROUTINES `routines` and `env`,
    running the API, recorder, bridge and worker until the block ends."""
    routines_env = orjson.dumps(routines).decode()
    with Instance(stack, name, WORKERS="1", ROUTINES=routines_env, **env).running(
        PIPELINE
    ) as instance:
        yield instance


@contextmanager
def one_slot_instance(
    stack: Settings, name: str, routines: dict[str, Any], **env: str
) -> Iterator[Instance]:
    """A `pipeline_instance` with exactly one worker slot and no dispatch headroom: a task
    holding the slot keeps every other one waiting (a newcomer of each priority on its
    Celery queue, the rest in the bridge)."""
    with pipeline_instance(
        stack, name, routines, WORKER_CONCURRENCY="1", DISPATCH_HEADROOM="0", **env
    ) as instance:
        yield instance
