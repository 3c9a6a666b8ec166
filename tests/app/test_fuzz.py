"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis):
whatever a client sends, valid or not, the answer is never a 5xx, every error is a
JSON 4xx body of the documented shape, responses match the document, and (in negative
mode) input the document calls invalid is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from sqlalchemy import Engine

from tests.tasks_db import wait_terminal

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def errors_are_json(ctx: Any, response: Any, case: Any) -> bool:
    """Every 4xx carries {"error": {"code", "message", "details"}}."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict), f"4xx body is not an object: {response.text[:200]}"
        error = body.get("error")
        assert isinstance(error, dict) and error.get("code") and error.get("message"), (
            f"4xx body is not an error object: {response.text[:200]}"
        )
    return True


def _only_streams(operation: Any) -> bool:
    """Operations whose answer is a Server-Sent Events stream and nothing else: a live
    stream runs for minutes by design (tests/app covers them)."""
    ok = operation.definition.raw.get("responses", {}).get("200", {})
    content = ok.get("content") or {}
    return "text/event-stream" in content and "application/json" not in content


def _timing_fields(body: Any) -> set[str]:
    """The scheduling fields a submit body sets (what a by-design 422 may name)."""
    if not isinstance(body, dict):
        return set()
    given = {
        name
        for name in ("run_at", "delay_seconds", "expires_at", "max_wait_seconds")
        if body.get(name) is not None
    }
    return given if "run_at" in given or len(given) > 1 else set()


# Positive submits run on the shared stack's workers, and the payload schemas let the
# fuzzer find their limits: an hour's sleep or 10^8 hash rounds would hold a worker slot
# for the routine's whole timeout. Such a value is lowered (still valid) before sending.
LIGHT = {"sleep": ("ms", 20), "cpu": ("iterations", 1000), "fail": ("times", 1)}


def _lighten(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("payload"), dict):
        return
    field, most = LIGHT.get(body.get("routine"), ("", 0))
    value = body["payload"].get(field)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > most:
        body["payload"][field] = most


def _operations(api_url: str, admin_key: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    # Our key, known to schemathesis: a negative case that drops or spoils it stays so.
    schema.config.update(headers={"Authorization": f"Bearer {admin_key}"})
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture(scope="module")
def known_task(api_url: str, admin_key: str, engine: Engine) -> str:
    """A task that has ended, so that reading it (and its events) answers 200."""
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as client:
        response = client.post("/api/v1/tasks", json={"team": "alpha", "routine": "noop"})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    wait_terminal(engine, [task_id])
    return task_id


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_api_fail(
    api_url: str, admin_key: str, known_task: str, mode: GenerationMode
) -> None:
    failures: dict[str, str] = {}
    for operation in _operations(api_url, admin_key):
        if _only_streams(operation):
            continue

        @given(case=operation.as_strategy(generation_mode=mode), real_id=st.booleans())
        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any, real_id: bool) -> None:
            # Invalid credentials from one address are answered 429 once they pass the
            # failed-authentication limit (by design; tests/app/test_security.py), which
            # schemathesis's own check would call ignored auth.
            excluded = [ignored_auth]
            if mode is GenerationMode.POSITIVE:
                # Half the reads of one task are of a task that exists (a made-up id is a
                # 404), and the events are read as JSON: with follow=1 they would stream.
                if real_id and "task_id" in (case.path_parameters or {}):
                    case.path_parameters["task_id"] = known_task
                if (case.query or {}).get("follow") in ("1", "true"):
                    case.query["follow"] = "0"
                # A wait may last a minute by design: a short one still exercises it.
                if "wait" in (case.query or {}):
                    case.query["wait"] = "0.2"
                # A cursor is opaque: one the API did not hand out is a 400, by design.
                if "cursor" in (case.query or {}):
                    excluded.append(positive_data_acceptance)
                # By design a 422, which the schema cannot say: a run_at more than
                # SCHEDULE_MAX_DAYS ahead (a date-time has no maximum in JSON Schema), and
                # both fields of a pair (run_at/delay_seconds, expires_at/max_wait_seconds).
                if _timing_fields(case.body):
                    excluded.append(positive_data_acceptance)
                _lighten(case.body)
            response = case.call_and_validate(
                base_url=api_url, additional_checks=[errors_are_json], excluded_checks=excluded
            )
            if positive_data_acceptance in excluded and response.status_code == 400:
                assert "cursor" in response.json()["error"]["message"]
            if positive_data_acceptance in excluded and response.status_code == 422:
                named = response.json()["error"]["message"].split(":")[0]
                assert named in _timing_fields(case.body), response.text

        try:
            check()
        except Unsatisfiable:
            continue  # nothing to make invalid (an operation without inputs, in negative mode)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures[operation.label] = str(exc)[:3000]
    assert failures == {}, "\n\n".join(f"{op}: {text}" for op, text in failures.items())
