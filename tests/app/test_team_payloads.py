"""A team's own routine with a payload JSON Schema in ROUTINES, on a real API (an isolated
instance started with that ROUTINES): the API refuses a payload the schema refuses with a
422 naming the field, takes one it accepts, and its OpenAPI document shows the schema;
a schema that cannot work stops a process at start-up naming the routine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from core.settings import Settings
from tests.instance import Instance
from tests.isolated import REPO
from tests.schemas import REPORT_SCHEMA

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# A team routine (running the built-in echo, so a worker could run it) with its own schema.
ROUTINES = {"report": {"function": "tasks.routines:echo", "payload_schema": REPORT_SCHEMA}}


@pytest.fixture(scope="module")
def team_api(stack: Settings) -> Iterator[Instance]:
    """An API alone (nothing here needs a task to run), with the team routine."""
    with Instance(stack, "payloads", ROUTINES=orjson.dumps(ROUTINES).decode()).running(
        ["api"]
    ) as instance:
        yield instance


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (None, ["payload.day"]),
        ({"day": "tomorrow"}, ["payload.day"]),
        ({"day": "2026-01-31", "rows": [1, 0]}, ["payload.rows.1"]),
        ({"day": "2026-01-31", "colour": "red"}, ["payload.colour"]),
    ],
)
def test_a_payload_the_teams_schema_refuses_is_422_naming_the_field(
    team_api: Instance, payload: dict[str, Any] | None, fields: list[str]
) -> None:
    body: dict[str, Any] = {"team": "alpha", "routine": "report"}
    if payload is not None:
        body["payload"] = payload
    with team_api.client() as client:
        response = client.post("/api/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == fields


def test_a_payload_the_teams_schema_accepts_is_202_alone_in_its_batch(team_api: Instance) -> None:
    good = {"team": "alpha", "routine": "report", "payload": {"day": "2026-01-31", "rows": [1]}}
    with team_api.client() as client:
        single = client.post("/api/v1/tasks", json=good)
        batch = client.post(
            "/api/v1/tasks/batch",
            json={"tasks": [good, {**good, "payload": {"rows": []}}, good]},
        )
    assert single.status_code == 202, single.text
    results = batch.json()["results"]
    assert [r["status_code"] for r in results] == [202, 422, 202]
    assert results[1]["error"]["message"] == "payload.day: Field required"


def test_the_document_shows_the_teams_schema(team_api: Instance) -> None:
    with team_api.client() as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    shown = schemas["Payload.report"]
    assert shown["required"] == ["day"]
    assert shown["properties"]["day"] == {"$ref": "#/components/schemas/Payload.report/$defs/day"}
    assert schemas["SubmitRequest.report"]["properties"]["routine"]["const"] == "report"
    assert "payload" in schemas["SubmitRequest.report"]["required"]
    body = spec["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    mapping = body["schema"]["discriminator"]["mapping"]
    assert mapping["report"] == "#/components/schemas/SubmitRequest.report"


def test_a_schema_that_cannot_work_stops_start_up_naming_the_routine() -> None:
    bad = {"report": {"function": "tasks.routines:echo", "payload_schema": {"type": "integr"}}}
    result = subprocess.run(
        [sys.executable, "-m", "bridge"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "ROUTINES": orjson.dumps(bad).decode()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "ROUTINES (report): payload_schema: not a valid JSON Schema" in result.stderr
