"""The direct read (app/direct_read.py) on the real Postgres: `GET /api/v1/tasks/<id>`
answered on the loop gives the Flask app's answer byte for byte, and whatever it does not
answer (no key, a key this process has not read yet, another team's task, an unknown
task, a query string, a Postgres it cannot reach) the app answers, as it always did.

Two fronts serve the same Flask app in-process: one with the direct read, one without;
a hook on the app counts the requests that reached it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from sqlalchemy import Engine, make_url, text

from app import create_app
from app.direct_read import DirectRead
from app.metrics import REQUESTS
from app.services import Services
from app.waiting import Front
from core.settings import Settings
from testing.instance import free_port
from tests.helpers import wait_for

pytestmark = [pytest.mark.stack]

ROUTE = "/api/v1/tasks/<task_id>"


class Fronts:
    """The app behind a front with the direct read and behind one without it."""

    def __init__(self, settings: Settings, direct_database_url: str | None = None) -> None:
        self.app: Flask = create_app(settings)
        self.reached_app = 0

        @self.app.before_request
        def _reached() -> None:
            self.reached_app += 1

        self.services: Services = self.app.extensions["taskplatform"]
        self.direct = DirectRead(self.services, connections=2, database_url=direct_database_url)
        self.with_direct = Front(self.app, threads=2, direct=self.direct)
        self.app_only = Front(self.app, threads=2)

    async def get(self, front: Front, path: str, key: str | list[str] | None) -> httpx.Response:
        keys = [] if key is None else [key] if isinstance(key, str) else key
        headers = [("Authorization", f"Bearer {each}") for each in keys]
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers=headers)

    def both(
        self, path: str, key: str | list[str] | None
    ) -> tuple[httpx.Response, httpx.Response, int]:
        """(direct front's answer, app-only front's answer, requests the app got for the
        first of them)."""

        async def run() -> tuple[httpx.Response, httpx.Response, int]:
            before = self.reached_app
            direct = await self.get(self.with_direct, path, key)
            reached = self.reached_app - before
            return direct, await self.get(self.app_only, path, key), reached

        return self.loop.run_until_complete(run())

    def __enter__(self) -> Fronts:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.direct.open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.direct.close())
        self.loop.close()
        for front in (self.with_direct, self.app_only):
            front.wsgi.executor.shutdown(wait=True)
        self.services.close()


@pytest.fixture()
def fronts(stack: Settings) -> Iterator[Fronts]:
    with Fronts(stack) as fronts:
        yield fronts


def recorded_task(api: httpx.Client, engine: Engine, team: str) -> str:
    """A task of `team`, submitted through the running API and recorded in Postgres."""
    answer = api.post("/api/v1/tasks", json={"team": team, "routine": "noop", "payload": {}})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]

    def recorded() -> bool:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM tasks WHERE task_id = CAST(:t AS uuid)"), {"t": task_id}
            ).scalar_one()
        return found == 1

    wait_for(recorded, timeout=30, what=f"task {task_id} to be recorded")
    return task_id


def served(route_status: str) -> float:
    return REQUESTS.labels(ROUTE, "GET", route_status)._value.get()


@pytest.fixture()
def alpha_read(
    api: httpx.Client, engine: Engine, team_key: Callable[[str], str]
) -> tuple[str, str]:
    """(a key of team alpha, the path of a recorded task of alpha's)."""
    return team_key("alpha"), f"/api/v1/tasks/{recorded_task(api, engine, 'alpha')}"


def test_a_read_the_direct_path_answers_is_the_apps_answer_byte_for_byte(
    fronts: Fronts, alpha_read: tuple[str, str]
) -> None:
    key, path = alpha_read
    # The first read of a key in a process looks it up (the app); later ones find it cached.
    first, _, reached = fronts.both(path, key)
    assert (first.status_code, reached) == (200, 1)

    counted = served("200")
    direct, app_only, reached = fronts.both(path, key)
    assert reached == 0  # answered without the app
    assert served("200") - counted == 2  # each front's answer counted, as the app counts
    assert direct.status_code == app_only.status_code == 200
    assert direct.headers.multi_items() == app_only.headers.multi_items()
    assert direct.content == app_only.content
    assert direct.json()["task_id"] == path.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "case",
    [
        "no key",
        "unknown key",
        "two keys",
        "another team's task",
        "unknown task",
        "not a task id",
        "a query",
    ],
)
def test_what_the_direct_path_does_not_answer_the_app_answers(
    case: str,
    fronts: Fronts,
    api: httpx.Client,
    engine: Engine,
    team_key: Callable[[str], str],
) -> None:
    key = team_key("alpha")
    task_id = recorded_task(api, engine, "bravo" if case == "another team's task" else "alpha")
    path = {
        "unknown task": f"/api/v1/tasks/{uuid.uuid4()}",
        "not a task id": "/api/v1/tasks/not-a-task",
        "a query": f"/api/v1/tasks/{task_id}?fields=status",
    }.get(case, f"/api/v1/tasks/{task_id}")
    presented: dict[str, Any] = {
        "no key": None,
        "unknown key": "tpk_0000_unknown",
        "two keys": [key, key],  # the app reads them joined, as one
    }
    used = presented.get(case, key)
    fronts.both(f"/api/v1/tasks/{uuid.uuid4()}", key)  # the key is now cached
    fronts.both(f"/api/v1/tasks/{uuid.uuid4()}", used)  # and so is the one used, if any

    direct, app_only, reached = fronts.both(path, used)
    assert reached == 1
    assert direct.status_code == app_only.status_code
    assert direct.status_code in (400, 401, 404), direct.text
    assert direct.json() == app_only.json()


def test_while_postgres_cannot_be_reached_the_app_answers(
    stack: Settings, alpha_read: tuple[str, str]
) -> None:
    key, path = alpha_read
    # The direct read's connections go to a port nobody listens on; the app's are fine.
    nowhere = make_url(stack.database_url).set(port=free_port())
    with Fronts(stack, direct_database_url=nowhere.render_as_string(hide_password=False)) as fronts:
        fronts.both(path, key)  # the key is now cached
        assert not fronts.direct.backing_off()
        direct, app_only, reached = fronts.both(path, key)
        assert (direct.status_code, reached) == (200, 1)
        assert direct.content == app_only.content
        # It backs off: the next reads go to the app without waiting for a connection.
        assert fronts.direct.backing_off()
