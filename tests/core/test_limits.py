"""The limits agree with each other and with every encoder on the way: any payload the API
accepts can be written at every hop (property-based), and anything past a limit is
refused with the name of the setting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils import json as kombu_json

from app.submission import parse_submission
from core.limits import PAYLOAD_DEPTH_CEILING, json_depth, truncate
from core.messages import (
    CeleryEnvelope,
    MalformedMessage,
    StatusEvent,
    TaskRequest,
    decode_event,
    decode_request,
)
from core.priority import Priority
from core.settings import ConfigError, load_settings
from core.status import Status

LIMITS = load_settings().limits
TASK_ID = "01a22e23-5a04-7f2c-a3fd-bbf0d3fd45f0"
AT = datetime(2026, 11, 30, 12, 0, 0, 1, tzinfo=UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)
payloads = st.dictionaries(st.text(), json_values, max_size=5)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _request(payload: dict[str, Any]) -> TaskRequest:
    item = parse_submission({"team": "alpha", "routine": "echo", "payload": payload})
    return TaskRequest(
        task_id=TASK_ID,
        team=item.team,
        routine=item.routine,
        priority=Priority.HIGH,
        accepted_at=AT,
        payload=item.payload,
    )


def _every_hop(payload: dict[str, Any]) -> None:
    """Write the payload as each stage does, and read it back where a stage reads it."""
    request = _request(payload)
    value = request.encode()
    assert decode_request(value).payload == payload
    args = [CeleryEnvelope(request, Priority.HIGH).to_json()]
    assert kombu_json.loads(kombu_json.dumps([args, {}, {}]))[0] == args  # Celery's body
    assert CeleryEnvelope.from_json(args[0]).request.payload == payload
    orjson.dumps(args)  # the argument text the bridge gives Celery
    accepted = StatusEvent(
        task_id=TASK_ID, status=Status.ACCEPTED, team="alpha", routine="echo",
        priority="high", at=AT, accepted_at=AT, payload=payload,
    )  # fmt: skip
    assert decode_event(accepted.encode()).payload == payload
    ended = StatusEvent(
        task_id=TASK_ID, status=Status.SUCCEEDED, team="alpha", routine="echo",
        priority="high", at=AT, attempt=1, result=payload,
    )  # fmt: skip
    encoded = ended.encode()
    assert decode_event(encoded).result == payload
    if len(orjson.dumps(payload)) <= LIMITS.result_max_bytes:
        assert len(encoded) <= LIMITS.event_max_bytes


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_payload_the_api_accepts_is_written_at_every_hop(payload: dict[str, Any]) -> None:
    if json_depth(payload, LIMITS.payload_max_depth) > LIMITS.payload_max_depth:
        return  # the API answers 422
    _every_hop(payload)


@given(st.text(min_size=1))
def test_an_event_error_is_cut_to_a_bounded_text(error: str) -> None:
    event = StatusEvent(
        task_id=TASK_ID, status=Status.FAILED, team="alpha", routine="echo", priority="high",
        error=error * 2000,
    )  # fmt: skip
    assert len(event.encode()) <= LIMITS.event_max_bytes
    assert decode_event(event.encode()).error.startswith(error[:10])  # type: ignore[union-attr]


def test_a_payload_as_deep_as_the_encoders_allow_is_written_at_every_hop() -> None:
    _every_hop(_nested(PAYLOAD_DEPTH_CEILING))


def test_the_bridge_refuses_a_request_deeper_than_the_encoders_can_write() -> None:
    too_deep = b'{"a":' * PAYLOAD_DEPTH_CEILING + b"{}" + b"}" * PAYLOAD_DEPTH_CEILING
    raw = (
        b'{"task_id":"' + TASK_ID.encode() + b'","team":"alpha","routine":"echo",'
        b'"priority":"high","accepted_at":"2026-11-30T12:00:00+00:00","payload":' + too_deep + b"}"
    )
    with pytest.raises(MalformedMessage, match="nested more than 250 levels"):
        decode_request(raw)


def test_a_request_at_the_request_limit_fits_kafka_with_the_dead_letter_headers() -> None:
    assert LIMITS.request_max_bytes + 36 + 2048 == LIMITS.message_max_bytes
    assert LIMITS.topic_max_message_bytes > LIMITS.message_max_bytes
    assert LIMITS.event_max_bytes <= LIMITS.message_max_bytes


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("x", 0), ({}, 1), ([], 1), ({"a": [1, {"b": []}]}, 4), (_nested(70), 70)],
)
def test_json_depth(value: Any, depth: int) -> None:
    assert json_depth(value, 100) == depth


def test_json_depth_stops_counting_past_the_limit() -> None:
    assert json_depth(_nested(5000), 64) == 65


def test_truncate_says_how_much_was_left_out() -> None:
    assert truncate("short", 10) == "short"
    cut = truncate("x" * 100, 40)
    assert len(cut) == 40 and cut == "x" * 18 + "… (82 more characters)"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"payload_max_depth": PAYLOAD_DEPTH_CEILING + 1}, "PAYLOAD_MAX_DEPTH"),
        ({"result_max_bytes": 1_040_000}, "RESULT_MAX_BYTES"),
        ({"kafka_message_max_bytes": 1000}, "KAFKA_MESSAGE_MAX_BYTES"),
    ],
)
def test_inconsistent_limits_stop_start_up_naming_the_variable(
    overrides: dict[str, int], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(**overrides)
