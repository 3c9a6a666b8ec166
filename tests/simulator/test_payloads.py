"""A dataset's payloads are checked against the routines' schemas before anything is sent:
from this environment's settings (`validate`) or from the platform's /openapi.json (`run`,
`validate --api-url`), with the API's own check, each problem naming
`requests[i].payload.<field>`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.openapi import build_spec
from core.settings import Settings
from simulator import payloads
from simulator.cli import main
from simulator.dataset import parse_dataset
from tests.simulator.conftest import StubApi

REPORT: dict[str, Any] = {
    "type": "object",
    "$defs": {"day": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
    "properties": {"day": {"$ref": "#/$defs/day"}, "rows": {"type": "array"}},
    "required": ["day"],
    "additionalProperties": False,
}
SETTINGS = Settings(routines={"report": {"function": "r:run", "payload_schema": REPORT}})
REQUESTS: list[dict[str, Any]] = [
    {"at": "00:00", "team": "alpha", "routine": "sleep", "payload": {"ms": 5}},
    {"at": "00:01", "team": "alpha", "routine": "sleep", "payload": {"ms": -5}},
    {"at": "00:02", "team": "alpha", "routine": "cpu", "payload": {"iterations": "lots", "x": 1}},
    {"at": "00:03", "team": "alpha", "routine": "report"},
    {"at": "00:04", "team": "alpha", "routine": "report", "payload": {"day": "today"}},
    {"at": "00:05", "team": "alpha", "routine": "report", "payload": {"day": "2026-01-31"}},
    {"at": "00:06", "team": "alpha", "routine": "mystery", "payload": {"ms": -5}},
    {"at": "00:07", "team": "alpha", "routine": "echo", "payload": {"anything": [1]}},
]
EXPECTED = [
    "requests[1].payload.ms: -5 is less than the minimum of 0",
    'requests[2].payload.iterations: "lots" is not of type "integer"',
    "requests[2].payload.x: is not a known field",
    "requests[3].payload.day: is required",
    'requests[4].payload.day: "today" does not match "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"',
]


def dataset_file(tmp_path: Path, requests: list[dict[str, Any]]) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": "d", "requests": requests}))
    return path


def test_the_schemas_from_settings_and_from_the_document_find_the_same_problems() -> None:
    dataset = parse_dataset(json.dumps({"name": "d", "requests": REQUESTS}))
    from_settings = payloads.problems(dataset, payloads.from_settings(SETTINGS))
    from_document = payloads.problems(dataset, payloads.from_document(build_spec(SETTINGS)))
    # An unknown routine is the platform's to refuse; a bad field is named with its path.
    assert sorted(from_settings) == sorted(EXPECTED)
    assert from_document == from_settings


def test_a_document_without_payload_schemas_checks_nothing() -> None:
    assert payloads.from_document({"openapi": "3.1.0"}) == {}
    assert payloads.from_document("not a document") == {}


def test_validate_refuses_a_bad_payload_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dataset_file(tmp_path, REQUESTS[:2])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"invalid dataset {path} (1 problem)" in err
    assert "requests[1].payload.ms: -5 is less than the minimum of 0" in err


def test_validate_with_an_api_url_uses_the_platforms_schemas(
    tmp_path: Path, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # The platform knows `report`; this environment does not.
    stub_api.openapi = build_spec(SETTINGS)
    path = dataset_file(tmp_path, [REQUESTS[0], REQUESTS[3]])
    assert main(["validate", str(path)]) == 0
    assert main(["validate", str(path), "--api-url", stub_api.url]) == 2
    assert "requests[1].payload.day: is required" in capsys.readouterr().err
    assert ("GET", "/openapi.json") in stub_api.requests
    assert stub_api.posts == 0


def test_run_refuses_a_bad_payload_before_sending_anything(
    tmp_path: Path, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dataset_file(tmp_path, REQUESTS[:2])
    argv = ["run", str(path), "--api-url", stub_api.url, "--api-key", "k", "--no-progress"]
    assert main([*argv, "--report-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"simulator: invalid dataset {path} (1 problem); nothing was sent"
    assert "requests[1].payload.ms: -5 is less than the minimum of 0" in err
    assert stub_api.requests == [("GET", "/openapi.json")]  # read the schemas, sent nothing
    assert not (tmp_path / "r").exists()


def test_run_against_a_platform_without_payload_schemas_warns_and_goes_on(
    tmp_path: Path, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    stub_api.openapi = None
    path = dataset_file(tmp_path, REQUESTS[:1])
    argv = ["run", str(path), "--api-url", stub_api.url, "--api-key", "k", "--no-progress"]
    argv += ["--speed", "10", "--follow", "api", "--report-dir", str(tmp_path / "r")]
    assert main(argv) == 0
    assert "publishes no payload schemas" in capsys.readouterr().err
    assert stub_api.posts == 1
