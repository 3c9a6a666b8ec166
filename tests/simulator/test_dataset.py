"""The dataset format: every problem reported with its entry, field and value; the schema."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema_rs
import pytest

from simulator.dataset import (
    SCHEMA_PATH,
    format_clock,
    json_schema,
    load_dataset,
    parse_clock,
    parse_dataset,
    schema_text,
)
from simulator.errors import DatasetError
from tests.simulator.conftest import DATASETS

GOOD: dict[str, Any] = {
    "name": "t",
    "description": "test",
    "requests": [
        {"at": "00:00", "team": "alpha", "routine": "noop", "priority": "high", "payload": {}},
        {
            "at": "05:00",
            "team": "bravo",
            "routine": "sleep",
            "priority": "low",
            "payload": {"ms": 5},
            "count": 4,
            "every": "00:20",
        },
    ],
}


def problems_of(data: Any) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(json.dumps(data))
    assert "nothing was sent" in str(caught.value)
    return caught.value.problems


def with_request(index: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    for name, value in changes.items():
        if value is None:
            del data["requests"][index][name]
        else:
            data["requests"][index][name] = value
    return data


def test_a_good_dataset_parses() -> None:
    dataset = parse_dataset(json.dumps(GOOD))
    assert dataset.size == 5
    assert dataset.requests[1].every == 20.0
    assert dataset.requests[1].offsets() == [300, 320, 340, 360]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"at": "06:01"}, 'requests[1].at: "06:01" is after 06:00'),
        ({"at": "6:00"}, 'requests[1].at: "6:00" is not MM:SS'),
        ({"at": "00:60"}, 'requests[1].at: "00:60" is not MM:SS'),
        ({"at": "0100"}, 'requests[1].at: "0100" is not MM:SS'),
        ({"at": 10}, "requests[1].at: 10: input should be a valid string"),
        ({"team": None}, "requests[1].team: is required"),
        ({"priority": "urgent"}, 'requests[1].priority: "urgent" is not one of high, medium'),
        ({"team": "Alpha"}, 'requests[1].team: "Alpha" is not a name'),
        ({"payload": [1]}, "requests[1].payload: [1]: input should be an object"),
        ({"count": 0}, "requests[1].count: 0: input should be greater than or equal to 1"),
        ({"count": 2.5}, "requests[1].count: 2.5: input should be a valid integer"),
        ({"every": -1}, "requests[1].every: -1 is negative"),
        ({"every": "soon"}, 'requests[1].every: "soon" is not MM:SS'),
        ({"every": None}, "requests[1].count: 4 repeats need `every`"),
        ({"count": 5}, "requests[1].count: 5 repeats every 20s from 05:00 run to 06:20"),
        ({"every": "00:21"}, "after 06:00"),
        ({"prority": "low"}, 'requests[1].prority: is not a known field (value "low")'),
        ({"delay": -1}, "requests[1].delay: -1 is negative"),
        ({"delay": True}, "requests[1].delay: true is neither MM:SS nor a number of seconds"),
        ({"delay": "1:00"}, 'requests[1].delay: "1:00" is not MM:SS'),
        ({"expires": 0}, "requests[1].expires: 0 is not more than 0"),
        ({"expires": "00:00"}, 'requests[1].expires: "00:00" is not more than 0'),
        ({"expires": -2.5}, "requests[1].expires: -2.5 is negative"),
        ({"cancel_after": "soon"}, 'requests[1].cancel_after: "soon" is not MM:SS'),
        ({"cancel_after": [1]}, "requests[1].cancel_after: [1] is neither MM:SS nor a number"),
        ({"delay_seconds": 5}, "requests[1].delay_seconds: is not a known field (value 5)"),
        ({"payload": "x"}, 'requests[1].payload: "x": input should be an object'),
    ],
)
def test_each_problem_names_the_entry_field_and_value(
    changes: dict[str, Any], expected: str
) -> None:
    problems = problems_of(with_request(1, **changes))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected) or expected in problems[0], problems


def test_priority_and_payload_are_optional() -> None:
    dataset = parse_dataset(json.dumps(with_request(1, priority=None, payload=None)))
    assert (dataset.requests[1].priority, dataset.requests[1].payload) == (None, None)
    assert dataset.requests[0].payload == {}  # given empty: sent empty


def test_lifecycle_fields_take_seconds_or_mm_ss() -> None:
    data = with_request(0, delay=2.5, expires="01:30", cancel_after=0)
    request = parse_dataset(json.dumps(data)).requests[0]
    assert (request.delay, request.expires, request.cancel_after) == (2.5, 90.0, 0.0)
    plain = parse_dataset(json.dumps(GOOD)).requests[0]
    assert (plain.delay, plain.expires, plain.cancel_after) == (None, None, None)


def test_every_problem_is_collected_not_just_the_first() -> None:
    data = copy.deepcopy(GOOD)
    data["requests"].append(dict(data["requests"][0], at="07:00", priority="urgent"))
    data["requests"][0]["team"] = "Alpha"
    del data["name"]
    problems = problems_of(data)
    assert problems == [
        "name: is required",
        'requests[0].team: "Alpha" is not a name (a lowercase letter, then up to 39 of '
        "a-z 0-9 _ -)",
        'requests[2].at: "07:00" is after 06:00',
        'requests[2].priority: "urgent" is not one of high, medium or low',
    ]


def test_06_00_is_allowed_and_repeats_may_end_exactly_there() -> None:
    data = with_request(1, at="06:00", count=None, every=None)
    assert parse_dataset(json.dumps(data)).requests[1].offset == 360
    assert parse_dataset(json.dumps(with_request(1, at="05:00", count=61, every=1))).size == 62


def test_whole_dataset_problems() -> None:
    assert problems_of({"name": "t", "requests": []})[0].startswith("requests: []")
    assert problems_of([]) == ["dataset: []: input should be an object"]
    with pytest.raises(DatasetError) as caught:
        parse_dataset('{"name": ')
    assert caught.value.problems[0].startswith("dataset: the file is not valid JSON")


def test_a_missing_file_is_a_dataset_error(tmp_path: Any) -> None:
    with pytest.raises(DatasetError, match="nothing was sent") as caught:
        load_dataset(tmp_path / "nope.json")
    assert caught.value.problems[0].startswith("cannot read the file")


def test_clock_helpers() -> None:
    assert parse_clock("00:00") == 0
    assert parse_clock("06:00") == 360
    assert parse_clock("12:59") == 779  # valid as a clock; `at` limits it to 06:00
    with pytest.raises(ValueError, match="is not MM:SS"):
        parse_clock("1:00")
    assert format_clock(495) == "08:15"
    assert format_clock(1.5) == "00:01.5"


def test_the_published_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "simulator/dataset.schema.json is stale: run `python -m simulator schema --write`"
    )


@pytest.mark.parametrize("path", sorted(DATASETS.glob("*.json")), ids=lambda p: p.name)
def test_bundled_datasets_are_valid(path: Any) -> None:
    dataset = load_dataset(path)
    assert dataset.size > 0
    jsonschema_rs.validate(json_schema(), json.loads(path.read_text(encoding="utf-8")))


def test_schema_and_validator_agree_on_simple_faults() -> None:
    validator = jsonschema_rs.validator_for(json_schema())
    assert validator.is_valid(GOOD)
    assert validator.is_valid(with_request(1, priority=None, payload=None, delay="00:05"))
    assert validator.is_valid(with_request(1, expires=0.5, cancel_after=0))
    faults: list[dict[str, Any]] = [
        {"at": "06:01"},
        {"priority": "urgent"},
        {"team": None},
        {"count": 0},
        {"delay": -1},
        {"expires": 0},
        {"expires": "00:00"},
        {"cancel_after": "later"},
    ]
    for changes in faults:
        data = with_request(1, **changes)
        assert not validator.is_valid(data), changes
        problems_of(data)  # the validator refuses it too
