"""Accepting tasks (app.submission.Submission) with fakes: each item of a request gets
its own answer. Kafka is a stand-in for the submitter (and, in the last test, a fake
producer under the real KafkaSubmitter); the accepted cache is the real one over a
dictionary; Postgres answers with the rows the test gives. The HTTP contract is tested
end to end in test_api_contract.py and test_overload.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import jsonschema_rs
import pytest
from confluent_kafka import KafkaError
from sqlalchemy.sql.dml import Insert

from app.accepted_cache import AcceptedCache
from app.auth import Principal
from app.errors import ApiError, TooManyRequests
from app.kafka_submitter import KafkaSubmitter, refusal
from app.openapi import build_spec
from app.submission import Accepted, Outcome, Submission, parse_submission
from core.messages import TaskRequest, decode_request, idempotent_task_id, utcnow
from core.routing import RoutingPolicy
from core.settings import Settings
from tests.fakes import FakeEngine, FakeProducer, FakeRedis, unit_settings

ADMIN = Principal(key_id="admin", team=None, is_admin=True)
ALPHA_KEY = Principal(key_id="alpha", team="alpha", is_admin=False)
Message3 = tuple[str, bytes, bytes]


class Submitter:
    """Stands in for KafkaSubmitter: a message is durable at once unless `refuse` says
    otherwise (what the real one answers for a message Kafka refused); like the real
    one, it hands what became durable to `on_durable` before answering."""

    def __init__(self, on_durable: Callable[[list[tuple[bytes, bytes]]], None]) -> None:
        self.on_durable = on_durable
        self.sent: list[Message3] = []
        self.refuse: Callable[[TaskRequest], ApiError | None] = lambda request: None
        self.on_send: Callable[[], None] = lambda: None

    def send(self, messages: list[Message3]) -> list[ApiError | None]:
        self.on_send()
        answers = [self.refuse(decode_request(value)) for _, _, value in messages]
        durable = [m for m, answer in zip(messages, answers, strict=True) if answer is None]
        self.sent.extend(durable)
        self.on_durable([(key, value) for _, key, value in durable])
        return answers


@dataclass
class Limiter:
    """Stands in for RateLimiter: each team has `tokens` left; a take that costs more is
    refused (429) and spends nothing."""

    tokens: dict[str, int] = field(default_factory=dict)

    def take(self, team: str, cost: int) -> None:
        left = self.tokens.get(team, 1_000_000)
        if cost > left:
            raise TooManyRequests(f"team {team} is over its rate limit")
        self.tokens[team] = left - cost


@dataclass
class Rig:
    settings: Settings
    submission: Submission
    submitter: Submitter
    engine: FakeEngine
    limiter: Limiter

    def submit(self, *bodies: dict[str, Any], principal: Principal = ADMIN) -> list[Outcome]:
        return self.submission.submit(principal, [parse_submission(body) for body in bodies])

    def produced(self) -> list[TaskRequest]:
        return [decode_request(value) for _, _, value in self.submitter.sent]


@pytest.fixture()
def rig() -> Rig:
    # Small limits: a request over ~63 KB is too large, a payload over 16 KB is stored
    # apart, and payloads may nest 8 levels.
    settings = unit_settings(
        kafka_message_max_bytes=65_536, result_max_bytes=16_384, payload_max_depth=8
    )
    engine, limiter = FakeEngine(), Limiter()
    cache = AcceptedCache(cast(Any, FakeRedis()))
    submitter = Submitter(cache.record)
    submission = Submission(
        settings,
        engine=cast(Any, engine),
        submitter=cast(Any, submitter),
        cache=cache,
        policy=RoutingPolicy(settings),
        limiter=cast(Any, limiter),
    )
    return Rig(settings, submission, submitter, engine, limiter)


def task(team: str = "alpha", **fields: Any) -> dict[str, Any]:
    return {"team": team, "routine": "echo", "payload": {"seconds": 0}, **fields}


def statuses(outcomes: list[Outcome]) -> list[int]:
    return [202 if isinstance(o, Accepted) else cast(ApiError, o).status for o in outcomes]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_each_accepted_item_is_produced_to_its_teams_topic(rig: Rig) -> None:
    outcomes = rig.submit(task("alpha"), task("bravo"))

    assert statuses(outcomes) == [202, 202]
    topics = [topic for topic, _, _ in rig.submitter.sent]
    assert topics == ["tasks.alpha", "tasks.bravo"]
    assert [r.task_id for r in rig.produced()] == [cast(Accepted, o).task_id for o in outcomes]


def test_an_idempotent_repeat_is_answered_without_producing(rig: Rig) -> None:
    [first] = rig.submit(task(idempotency_key="order-7"))
    [again] = rig.submit(task(idempotency_key="order-7"))

    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert again.task_id == first.task_id
    assert (first.replay, again.replay) == (False, True)
    assert len(rig.submitter.sent) == 1


def test_an_idempotent_repeat_recorded_in_postgres_answers_with_its_status(rig: Rig) -> None:
    @dataclass
    class Row:
        task_id: uuid.UUID
        team: str = "alpha"
        routine: str = "sleep"
        priority: str = "medium"
        created_at: datetime = field(default_factory=utcnow)
        status: str = "SUCCEEDED"
        idempotency_key: str = "order-8"
        run_at: datetime | None = None
        expires_at: datetime | None = None

    rig.engine.rows = [Row(idempotent_task_id("alpha", "order-8"))]
    [again] = rig.submit(task(idempotency_key="order-8"))

    assert isinstance(again, Accepted)
    assert (again.replay, again.status) == (True, "SUCCEEDED")
    assert rig.submitter.sent == []


def test_a_teams_items_over_its_rate_limit_are_429_and_the_others_accepted(rig: Rig) -> None:
    rig.limiter.tokens = {"bravo": 1}
    outcomes = rig.submit(task("alpha"), task("bravo"), task("bravo"), task("alpha"))

    assert statuses(outcomes) == [202, 429, 429, 202]
    assert [r.team for r in rig.produced()] == ["alpha", "alpha"]
    assert rig.limiter.tokens["bravo"] == 1  # a refused request spends nothing


def test_a_payload_nested_too_deep_is_422_and_the_others_accepted(rig: Rig) -> None:
    outcomes = rig.submit(task(), task(payload=nested(9)), task(payload=nested(8)))

    assert statuses(outcomes) == [202, 422, 202]
    assert cast(ApiError, outcomes[1]).details[0]["field"] == "payload"
    assert len(rig.submitter.sent) == 2


def test_a_payload_its_routine_refuses_is_422_naming_each_field_and_the_others_accepted(
    rig: Rig,
) -> None:
    sleep = {"team": "alpha", "routine": "sleep"}
    outcomes = rig.submit(
        {**sleep, "payload": {"ms": 5}},
        {**sleep, "payload": {"ms": -5}},
        {**sleep, "payload": {"ms": "5", "msec": 5}},
        sleep,  # no payload: checked as {}, which the defaults fill
    )

    assert statuses(outcomes) == [202, 422, 422, 202]
    negative = cast(ApiError, outcomes[1])
    assert negative.details == [
        {"field": "payload.ms", "message": "-5 is less than the minimum of 0", "value": -5}
    ]
    assert negative.message == "payload.ms: -5 is less than the minimum of 0"
    assert {d["field"] for d in cast(ApiError, outcomes[2]).details} == {
        "payload.ms",
        "payload.msec",
    }
    assert [r.payload for r in rig.produced()] == [{"ms": 5}, None]


def test_a_teams_routine_is_checked_against_its_schema_from_routines() -> None:
    schema = {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}, "rows": {"type": "integer"}},
        "required": ["day"],
        "additionalProperties": False,
    }
    settings = unit_settings(routines={"report": {"function": "r:run", "payload_schema": schema}})
    submitter = Submitter(lambda durable: None)
    submission = Submission(
        settings,
        engine=cast(Any, FakeEngine()),
        submitter=cast(Any, submitter),
        cache=AcceptedCache(cast(Any, FakeRedis())),
        policy=RoutingPolicy(settings),
    )
    bodies = [
        {"team": "alpha", "routine": "report", "payload": {"day": "2026-01-31", "rows": 3}},
        {"team": "alpha", "routine": "report"},
        {"team": "alpha", "routine": "report", "payload": {"day": "2026-01-31", "rows": 1.5}},
    ]
    outcomes = submission.submit(ADMIN, [parse_submission(body) for body in bodies])

    assert statuses(outcomes) == [202, 422, 422]
    assert cast(ApiError, outcomes[1]).details == [
        {"field": "payload.day", "message": "Field required"}
    ]
    assert cast(ApiError, outcomes[2]).details[0]["field"] == "payload.rows"
    assert len(submitter.sent) == 1


REPORT = {
    "type": "object",
    "$defs": {"day": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
    "properties": {"day": {"$ref": "#/$defs/day"}, "rows": {"type": "integer", "minimum": 1}},
    "required": ["day"],
}


@pytest.mark.parametrize(
    ("routine", "payload"),
    [
        ("sleep", {"ms": 5}),
        ("sleep", {"ms": 5.0}),
        ("sleep", {"ms": -5}),
        ("sleep", {"ms": True}),
        ("sleep", {"ms": 3_600_001}),
        ("sleep", {"msec": 1}),
        ("sleep", None),
        ("cpu", {"iterations": 0}),
        ("fail", {"times": 1001}),
        ("echo", {"anything": [1, {"x": None}]}),
        ("report", {"day": "2026-01-31", "rows": 2}),
        ("report", {"day": "yesterday"}),
        ("report", {"rows": 0}),
        ("report", None),
    ],
)
def test_the_document_and_the_api_agree_on_every_payload(
    routine: str, payload: dict[str, Any] | None
) -> None:
    """What the OpenAPI document's submit body allows is accepted, and what it does not
    is refused (a 422): one schema, one check."""
    settings = unit_settings(routines={"report": {"function": "r:run", "payload_schema": REPORT}})
    spec = build_spec(settings)
    submit = spec["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    document = jsonschema_rs.validator_for({"components": spec["components"], **submit["schema"]})
    submission = Submission(
        settings,
        engine=cast(Any, FakeEngine()),
        submitter=cast(Any, Submitter(lambda durable: None)),
        cache=AcceptedCache(cast(Any, FakeRedis())),
        policy=RoutingPolicy(settings),
    )
    body: dict[str, Any] = {"team": "alpha", "routine": routine}
    if payload is not None:
        body["payload"] = payload
    [outcome] = submission.submit(ADMIN, [parse_submission(body)])

    assert statuses([outcome]) == ([202] if document.is_valid(body) else [422])


def test_depth_is_checked_before_the_schema(rig: Rig) -> None:
    [outcome] = rig.submit({"team": "alpha", "routine": "sleep", "payload": nested(9)})

    assert cast(ApiError, outcome).details[0]["field"] == "payload"
    assert "PAYLOAD_MAX_DEPTH" in cast(ApiError, outcome).message


def test_a_request_too_large_for_kafka_is_413_and_the_others_accepted(rig: Rig) -> None:
    outcomes = rig.submit(task(payload={"blob": "x" * 70_000}), task())

    assert statuses(outcomes) == [413, 202]
    assert len(rig.submitter.sent) == 1


def test_a_message_kafka_refuses_is_answered_alone(rig: Rig) -> None:
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large for the broker")
    rig.submitter.refuse = lambda r: refusal(too_large) if r.payload == {"refuse": 1} else None
    outcomes = rig.submit(task(), task(payload={"refuse": 1}), task())

    assert statuses(outcomes) == [202, 413, 202]
    assert len(rig.submitter.sent) == 2


def test_a_large_payload_is_stored_apart_before_its_request_is_produced(rig: Rig) -> None:
    inserts_at_send: list[int] = []
    rig.submitter.on_send = lambda: inserts_at_send.append(
        sum(isinstance(statement, Insert) for statement, _ in rig.engine.executed)
    )
    [accepted] = rig.submit(task(payload={"blob": "x" * 20_000}))

    assert isinstance(accepted, Accepted)
    assert inserts_at_send == [1]
    [(_, rows)] = [(s, p) for s, p in rig.engine.executed if isinstance(s, Insert)]
    assert [str(row["task_id"]) for row in rows] == [accepted.task_id]


def test_a_team_key_cannot_submit_for_another_team(rig: Rig) -> None:
    outcomes = rig.submit(task("alpha"), task("bravo"), principal=ALPHA_KEY)

    assert statuses(outcomes) == [202, 403]
    assert [r.team for r in rig.produced()] == ["alpha"]


def test_the_kafka_submitter_answers_a_message_the_producer_refuses_alone() -> None:
    producer = FakeProducer()
    producer.refuse(lambda message: message.key() == b"2")
    durable: list[tuple[bytes, bytes]] = []
    submitter = KafkaSubmitter(
        unit_settings(), on_durable=durable.extend, producer=cast(Any, producer)
    )
    try:
        answers = submitter.send([("tasks.alpha", str(n).encode(), b"{}") for n in (1, 2, 3)])
    finally:
        submitter.close()

    assert answers[0] is None and answers[2] is None
    assert answers[1] is not None and answers[1].status == 413
    assert durable == [(b"1", b"{}"), (b"3", b"{}")]
