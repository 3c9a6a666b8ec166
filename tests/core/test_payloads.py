"""Payload schemas: the built-in models, a team's JSON Schema from ROUTINES, the problems
a payload has (each with its path), and schemas that cannot work (refused at load)."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from core.payloads import (
    MAX_PROBLEMS,
    MAX_SLEEP_MS,
    CpuPayload,
    PayloadSchema,
    Problem,
    SchemaError,
    SleepPayload,
    builtin_schema,
    embed,
    extract,
)
from core.settings import BUILTIN_ROUTINES, ConfigError, RoutineSpec, load_settings
from tests.schemas import REPORT_SCHEMA


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTINES", raising=False)
    monkeypatch.chdir("/")  # no .env


def sleep_problems(payload: Any) -> list[Problem]:
    schema = BUILTIN_ROUTINES["sleep"].payload
    assert schema is not None
    return schema.problems(payload)


def test_every_builtin_routine_has_its_models_schema() -> None:
    for name, spec in BUILTIN_ROUTINES.items():
        assert spec.payload is not None, name
    assert BUILTIN_ROUTINES["sleep"].payload == PayloadSchema.of_model(SleepPayload)
    assert BUILTIN_ROUTINES["cpu"].payload == PayloadSchema.of_model(CpuPayload)
    ms = PayloadSchema.of_model(SleepPayload).schema["properties"]["ms"]
    assert (ms["type"], ms["minimum"], ms["maximum"]) == ("integer", 0, MAX_SLEEP_MS)


@pytest.mark.parametrize("payload", [{}, {"ms": 0}, {"ms": 5}, {"ms": MAX_SLEEP_MS}, {"ms": 5.0}])
def test_sleep_takes_a_whole_number_of_ms_in_range(payload: dict[str, Any]) -> None:
    assert sleep_problems(payload) == []
    assert SleepPayload.model_validate(payload).ms == payload.get("ms", 100)


@pytest.mark.parametrize(
    ("payload", "path", "words"),
    [
        ({"ms": -5}, ("ms",), "less than the minimum of 0"),
        ({"ms": MAX_SLEEP_MS + 1}, ("ms",), "greater than the maximum"),
        ({"ms": "5"}, ("ms",), 'not of type "integer"'),
        ({"ms": True}, ("ms",), 'not of type "integer"'),
        ({"ms": 1.5}, ("ms",), 'not of type "integer"'),
        ({"msec": 5}, ("msec",), "unknown field"),
    ],
)
def test_a_bad_sleep_payload_names_the_field(
    payload: dict[str, Any], path: tuple[str, ...], words: str
) -> None:
    (problem,) = sleep_problems(payload)
    assert problem.path == path
    assert problem.field() == "payload." + ".".join(path)
    assert words in problem.message


def test_noop_and_echo_take_any_object_without_a_check() -> None:
    for name in ("noop", "echo"):
        schema = BUILTIN_ROUTINES[name].payload
        assert schema is not None and schema.takes_anything and schema.takes_empty
        assert schema.problems({"anything": [1, {"x": None}]}) == []
    assert not PayloadSchema.of_model(SleepPayload).takes_anything


def test_a_team_schema_names_missing_unknown_and_nested_fields() -> None:
    schema = PayloadSchema(REPORT_SCHEMA)
    assert not schema.takes_empty and not schema.takes_anything
    assert schema.problems({"day": "2026-01-31", "rows": [1, 2]}) == []
    found = {(p.field(), p.kind) for p in schema.problems({"rows": [1, 0], "colour": "red"})}
    assert found == {
        ("payload.day", "required"),
        ("payload.colour", "unknown"),
        ("payload.rows.1", "invalid"),
    }
    (bad_day,) = schema.problems({"day": "yesterday"})
    assert bad_day.path == ("day",) and bad_day.value == "yesterday"


def test_problems_are_capped() -> None:
    schema = PayloadSchema({"type": "object", "additionalProperties": {"type": "integer"}})
    problems = schema.problems({f"k{i}": "x" for i in range(100)})
    assert len(problems) == MAX_PROBLEMS


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "integr"}, "not a valid JSON Schema"),
        ({"type": "string"}, "a payload is a JSON object"),
        ({"properties": {"x": {"$ref": "https://example.com/x.json"}}}, "only refer within"),
        ({"properties": {"x": {"$ref": "#/$defs/missing"}}}, "not a valid JSON Schema"),
        ({"properties": {"x": {"minimum": "zero"}}}, "not a valid JSON Schema"),
    ],
)
def test_a_schema_that_cannot_work_is_refused(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        PayloadSchema(schema)


def test_routines_schema_comes_from_the_environment_and_is_compiled_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routines = {
        "report": {"function": "reports.jobs:run", "payload_schema": REPORT_SCHEMA},
        "plain": {"function": "reports.jobs:plain"},
        "long_sleep": {"function": "tasks.routines:sleep", "timeout": 600},
    }
    monkeypatch.setenv("ROUTINES", json.dumps(routines))
    table = load_settings().routine_table
    report = table["report"].payload
    assert report is not None and report.schema == REPORT_SCHEMA
    assert table["report"].payload is report  # compiled when the settings load, not per use
    assert table["plain"].payload is None  # no schema: any JSON object
    # A routine that runs a built-in function reads that function's payload.
    assert table["long_sleep"].payload == PayloadSchema.of_model(SleepPayload)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "integr"}, "not a valid JSON Schema"),
        ({"$ref": "http://169.254.169.254/latest"}, "only refer within"),
        ("not an object", "valid dictionary"),
    ],
)
def test_an_invalid_schema_in_routines_stops_start_up_naming_the_routine(
    monkeypatch: pytest.MonkeyPatch, schema: Any, words: str
) -> None:
    monkeypatch.setenv(
        "ROUTINES", json.dumps({"report": {"function": "a:b", "payload_schema": schema}})
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "ROUTINES (report" in message and "payload_schema" in message, message
    assert words in message, message


def test_a_spec_with_a_compiled_schema_pickles_and_compares() -> None:
    spec = RoutineSpec(function="a:b", payload_schema=REPORT_SCHEMA)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec
    assert again.payload is not None and again.payload.problems({}) != []


def test_embedding_in_a_document_rewrites_local_references_and_back() -> None:
    pointer = "#/components/schemas/Payload.report"
    embedded = embed(REPORT_SCHEMA, pointer)
    assert embedded["properties"]["day"]["$ref"] == pointer + "/$defs/day"
    assert extract(embedded, pointer) == REPORT_SCHEMA
    assert embed({"$ref": "#"}, pointer) == {"$ref": pointer}
    assert builtin_schema("tasks.routines:nothing") is None
