"""Scripts called by hash in a pipeline (core.redis_scripts), on the stack's real Redis:
one round trip with no SCRIPT EXISTS before it, and a script Redis does not know (after
a restart) loaded and the pipeline run again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from core import redis_scripts
from core.settings import Settings
from tests.round_trips import redis_round_trips

pytestmark = pytest.mark.stack

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture()
def client(stack: Settings) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(stack.redis_url)
    yield made
    made.close()


@pytest.fixture()
def counter(client: redis.Redis) -> Iterator[str]:
    name = f"tp:test:counter:{uuid.uuid4()}"
    yield name
    client.delete(name, f"{name}:set")


def _fill(script: Any, counter: str) -> Any:
    def fill(pipe: Pipeline) -> None:
        redis_scripts.call(pipe, script, [counter], [2])
        pipe.set(f"{counter}:set", "x")  # a plain command beside it, safe to run twice
        redis_scripts.call(pipe, script, [counter], [3])

    return fill


def test_a_pipeline_with_scripts_is_one_round_trip(client: redis.Redis, counter: str) -> None:
    script = client.register_script(ADD)
    redis_scripts.execute(client, _fill(script, counter), [script])  # loads it if need be
    with redis_round_trips() as sent:
        replies = redis_scripts.execute(client, _fill(script, counter), [script])
    assert len(sent) == 1, f"{len(sent)} round trips"
    assert replies == [7, True, 10]


def test_a_script_redis_does_not_know_is_loaded_and_the_pipeline_run_again(
    client: redis.Redis, counter: str
) -> None:
    script = client.register_script(ADD)
    script.sha = "0" * 40  # a hash Redis knows no script by
    replies = redis_scripts.execute(client, _fill(script, counter), [script])
    assert replies == [2, True, 5]  # no call ran before the load: each added once
    assert script.sha != "0" * 40
