"""`AsyncClient` and `AsyncTask` against the running platform: the same calls, awaited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from taskplatform_client import (
    AsyncClient,
    AsyncTask,
    BatchRejected,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Status,
    TaskFailed,
    WaitTimeout,
)

pytestmark = pytest.mark.stack


def test_async_client_does_what_the_sync_one_does(api_url: str, admin_key: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(api_url, admin_key) as client:
            echoes = await asyncio.gather(
                *(client.submit("alpha", "echo", {"n": n}) for n in range(3))
            )
            assert all(isinstance(task, AsyncTask) for task in echoes)
            results = await asyncio.gather(*(task.result(timeout=30) for task in echoes))
            assert results == [{"n": n} for n in range(3)]

            key = f"async-{uuid.uuid4()}"
            first = await client.submit("alpha", "noop", idempotency_key=key)
            assert await client.submit("alpha", "noop", idempotency_key=key) == first

            sleeper = await client.submit("bravo", "sleep", {"ms": 300})
            statuses = [event.status async for event in sleeper.events()]
            assert statuses[0] == Status.ACCEPTED and statuses[-1] == Status.SUCCEEDED
            assert (await sleeper.get()).succeeded

            failing = await client.submit("alpha", "fail", {"times": 99})
            slow = await client.submit("alpha", "sleep", {"ms": 5000})
            with pytest.raises(WaitTimeout):
                await slow.wait(timeout=0.3)
            assert (await slow.cancel(terminate=True)).status == Status.CANCELLED
            with pytest.raises(Conflict):
                await echoes[0].cancel()
            with pytest.raises(TaskFailed) as failed:
                await failing.result(timeout=60)
            assert failed.value.status == Status.FAILED

            batch = await client.submit_many(
                [{"team": "charlie", "routine": "noop"}] * 3, batch_size=2
            )
            assert len(set(batch)) == 3
            with pytest.raises(BatchRejected):
                await client.submit_many([{"team": "charlie", "routine": "no-such"}])

            listed = [info async for info in client.list(team="charlie", limit=3, page_size=2)]
            assert len(listed) == 3
            page = await client.page(team="charlie", limit=2)
            assert len(page.tasks) == 2

            with pytest.raises(NotFound):
                await client.get(str(uuid.uuid4()))
            with pytest.raises(Invalid) as invalid:
                await client.submit("alpha", "no-such")
            assert "routine" in invalid.value.fields

    asyncio.run(scenario())


def test_async_forbidden(api_url: str, team_key: Callable[[str], str]) -> None:
    async def scenario() -> None:
        async with AsyncClient(api_url, team_key("alpha")) as client:
            with pytest.raises(Forbidden):
                await client.submit("bravo", "noop")

    asyncio.run(scenario())
