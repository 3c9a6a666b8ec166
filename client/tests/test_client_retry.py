"""Retries that never make a second task: a 429 forced by a tiny rate limit and a 503
forced by stopping Kafka, on a stack of its own (its own Kafka, Postgres and Redis; the
default stack is never touched)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from taskplatform_client import (
    NO_RETRY,
    Client,
    RateLimited,
    Retry,
    Task,
    TaskPlatformError,
    Unavailable,
)

from app.auth import create_key
from tests.faults.harness import IsolatedStack, isolated_stack
from tests.helpers import wait_for
from tests.isolated import ops

pytestmark = [pytest.mark.stack, pytest.mark.own_stack]

TIMEOUT = 240
RATE = 0.5  # team bravo's tasks/s: a token back every 2 s, so Retry-After is 2
# The bridge announces ACCEPTED, which the recorder writes: then a task is listed.
COMPONENTS = ["kafka", "postgres", "redis", "api", "recorder", "bridge"]


class Own(IsolatedStack):
    key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"


# One test, both retries on one stack: under `pytest -n 2 --dist loadgroup` a module
# fixture was set up anew for a second test (15 s more).
@pytest.fixture()
def own() -> Iterator[Own]:
    with isolated_stack(
        Own,
        "client-retry",
        COMPONENTS,
        timeout=TIMEOUT,
        teardown_reserve=60,
        KAFKA_PRODUCE_TIMEOUT_SECONDS="2",
        TEAM_RATE_LIMITS=f"bravo:{RATE}",
        RATE_BURST="1",
    ) as stack:
        engine = create_engine(stack.settings.database_url)
        try:
            stack.key = create_key(engine, team=None, admin=True)[1]
        finally:
            engine.dispose()
        yield stack


class Retries:
    """What `on_retry` heard: (error, attempt, seconds waited)."""

    def __init__(self) -> None:
        self.seen: list[tuple[TaskPlatformError, int, float]] = []
        self.first = threading.Event()

    def __call__(self, error: TaskPlatformError, attempt: int, wait: float) -> None:
        self.seen.append((error, attempt, wait))
        self.first.set()


def recorded(client: Client, team: str, count: int) -> set[str]:
    """The ids of the team's tasks once the recorder holds `count` of them."""

    def ids() -> set[str] | None:
        found = {info.task_id for info in client.list(team=team)}
        return found if len(found) >= count else None

    return wait_for(ids, timeout=30, what=f"{count} recorded tasks of {team}")


@pytest.mark.timeout(TIMEOUT)
def test_retries_after_429_and_503_never_make_a_second_task(own: Own) -> None:
    rate_limited(own)
    kafka_away(own)


def rate_limited(own: Own) -> None:
    """A 429 is retried after its Retry-After, with the same key; too short a budget
    raises RateLimited at once."""
    with Client(own.url, own.key, retry=NO_RETRY) as once:
        first = once.submit("bravo", "noop")  # the burst of one
        with pytest.raises(RateLimited) as limited:
            once.submit("bravo", "noop")
    assert limited.value.status == 429 and 1 <= (limited.value.retry_after or 0) <= 1 / RATE
    retries = Retries()
    with Client(own.url, own.key, on_retry=retries) as patient:
        second = patient.submit("bravo", "noop", idempotency_key="after-a-429")
        assert [type(error) for error, _, _ in retries.seen] == [RateLimited]
        assert 0 < retries.seen[0][2] <= 1 / RATE  # the Retry-After it was given
        # A budget shorter than Retry-After: no wait, the 429 at once.
        short = Client(own.url, own.key, retry=Retry(within=0.5))
        with short, pytest.raises(RateLimited):
            short.submit("bravo", "noop")
        assert recorded(patient, "bravo", 2) == {first.id, second.id}


def kafka_away(own: Own) -> None:
    """503s while Kafka is stopped are retried until it is back: one task, whose key
    names it again afterwards."""
    stopped = ops(own.env, "stop", "kafka", timeout=own.budget.left(60))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    retries = Retries()
    submitted: list[Task | BaseException] = []
    client = Client(own.url, own.key, retry=Retry(attempts=100, within=150), on_retry=retries)

    def submit() -> None:
        try:
            submitted.append(client.submit("alpha", "noop", {}, idempotency_key="kafka-away"))
        except BaseException as exc:  # the main thread reports it
            submitted.append(exc)

    with client:
        thread = threading.Thread(target=submit)
        thread.start()
        try:
            assert retries.first.wait(own.budget.left(30)), "no 503 while Kafka was away"
            assert not submitted
        finally:
            back = ops(own.env, "up", *COMPONENTS, timeout=own.budget.left(120))
            thread.join(own.budget.left(150))
        assert back.returncode == 0, back.stdout + back.stderr
        assert len(submitted) == 1 and isinstance(submitted[0], Task), submitted
        task = submitted[0]
        assert all(isinstance(error, Unavailable) for error, _, _ in retries.seen)
        assert len(retries.seen) >= 1
        assert recorded(client, "alpha", 1) == {task.id}
        again = client.submit("alpha", "noop", {}, idempotency_key="kafka-away")
        assert again == task and again.accepted is not None and again.accepted.idempotent_replay
        assert {info.task_id for info in client.list(team="alpha")} == {task.id}
