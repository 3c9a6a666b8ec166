"""Lua scripts in pipelines, called by their hash within the pipeline's one round trip.

Called on a pipeline, redis-py's script objects make it ask Redis whether it knows each
script (`SCRIPT EXISTS`) in a round trip of its own before every execute. Here a pipeline
calls `EVALSHA` directly and, when Redis does not know a script (it restarted, or its
scripts were flushed), loads the scripts and runs the pipeline again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script


def call(pipe: Pipeline, script: Script, keys: list[str], args: list[Any]) -> None:
    """Queue `script` on `pipe` by its hash (run it with `execute`)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)


def execute(
    client: redis.Redis, fill: Callable[[Pipeline], None], scripts: Iterable[Script]
) -> list[Any]:
    """A pipeline that `fill` queues commands on (its scripts through `call`), executed in
    one round trip; its replies. If Redis does not know a script, the scripts are loaded
    and `fill` runs again on a new pipeline: what `fill` queues must be safe to run twice
    (a NOSCRIPT call ran nothing, but the pipeline's other commands did)."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                script.sha = client.script_load(script.script)
    raise AssertionError("unreachable")
