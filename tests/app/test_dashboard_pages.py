"""The dashboard's pages without a browser: the task page's route and contract (no stack),
and the latest-tasks filters reaching GET /api/v1/tasks (against the running stack).
tests/app/test_task_page.py drives the same pages in headless Chromium."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from flask import Flask
from sqlalchemy import Engine

from app import create_app
from app.dashboard import CONTENT_SECURITY_POLICY
from core.priority import names as priority_names
from core.settings import Settings
from core.status import Status
from tests.tasks_db import wait_terminal

TEAM = "charlie"


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings())


def _contract(html: str) -> dict[str, object]:
    found = re.search(r'<script id="contract" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page carries its contract"
    return dict(json.loads(found.group(1)))


def test_the_task_page_is_served_for_a_task_id_with_the_contract_and_no_data(app: Flask) -> None:
    task_id = uuid.uuid4()
    page = app.test_client().get(f"/dashboard/tasks/{str(task_id).upper()}")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = page.get_data(as_text=True)
    assert f'data-task-id="{task_id}"' in html  # the canonical form, for the API
    contract = _contract(html)
    # Every status has its label, colour and stage, from core/.
    for name in ("labels", "status_colors", "stages"):
        table = contract[name]
        assert isinstance(table, dict) and set(table) == {s.value for s in Status}, name
    assert contract["priorities"] == priority_names()
    # No inline script: only the contract (data) and our own files, which are served.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all('type="application/json"' in s or "src=" in s for s in scripts), scripts
    client = app.test_client()
    for url in re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html):
        response = client.get(url)
        response.close()  # a static file is sent from an open file
        assert response.status_code == 200, url


def test_an_id_that_is_not_a_task_id_gets_a_page_that_says_so(app: Flask) -> None:
    page = app.test_client().get("/dashboard/tasks/%3Cb%3Enope")
    assert page.status_code == 200  # a page (an API error would be JSON: tests/app/test_fuzz.py)
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "is not a task id" in html
    assert "&lt;b&gt;nope" in html and "<b>nope" not in html
    assert "data-task-id" not in html


def test_the_dashboard_has_the_filters_and_the_search_box(app: Flask) -> None:
    html = app.test_client().get("/dashboard").get_data(as_text=True)
    controls = ("filter-team", "filter-status", "filter-routine", "filter-priority", "search-id")
    for element in controls:
        assert f'id="{element}"' in html, element


@pytest.mark.stack
def test_the_latest_tasks_filters_reach_the_api(
    api_url: str, team_key: Callable[[str], str], engine: Engine
) -> None:
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {team_key(TEAM)}"}, timeout=30
    ) as api:
        ids = {}
        for priority in ("low", "high"):
            answer = api.post(
                "/api/v1/tasks",
                json={"team": TEAM, "routine": "echo", "priority": priority, "payload": {}},
            )
            assert answer.status_code == 202, answer.text
            ids[priority] = answer.json()["task_id"]
        assert set(wait_terminal(engine, list(ids.values())).values()) == {"SUCCEEDED"}

        # The query the page sends with every filter set.
        query = {"team": TEAM, "status": "SUCCEEDED", "routine": "echo", "limit": "50"}
        for priority, task_id in ids.items():
            page = api.get("/api/v1/tasks", params={**query, "priority": priority})
            assert page.status_code == 200, page.text
            tasks = page.json()["tasks"]
            assert task_id in {t["task_id"] for t in tasks}
            assert {(t["team"], t["status"], t["routine"], t["priority"]) for t in tasks} == {
                (TEAM, "SUCCEEDED", "echo", priority)
            }
        other = api.get("/api/v1/tasks", params={**query, "status": "FAILED", "priority": "low"})
        assert ids["low"] not in {t["task_id"] for t in other.json()["tasks"]}

        bad = api.get("/api/v1/tasks", params={"priority": "urgent"})
        assert bad.status_code == 400
        assert bad.json()["error"]["message"].startswith("priority: 'urgent' is not one of")
        # A team key's filter on another team is refused, as without the page.
        assert api.get("/api/v1/tasks", params={"team": "alpha"}).status_code == 403
