"""Accepting tasks: validate, authorise, produce to Kafka, record, answer.

A task is accepted (202) only once Kafka has acknowledged its request with acks=all.
The same team and idempotency key always name the same task: a repeat is answered with
that task and nothing is produced (and if two repeats race, the bridge's claim runs it
once).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from app.accepted_cache import AcceptedCache
from app.auth import Principal
from app.errors import ApiError, PayloadTooLarge, TooManyRequests, ValidationFailed
from app.kafka_submitter import KafkaSubmitter
from app.metrics import SUBMITTED
from app.models import AcceptedTask, SubmitRequest, task_links
from app.rate_limit import RateLimiter
from core.db import once_more_if_disconnected
from core.limits import deeper_than
from core.messages import TaskRequest, idempotent_task_id, isoformat, utcnow, uuid7_text
from core.payloads import Problem
from core.routing import RoutingError, RoutingPolicy
from core.schema import REQUEST_COLUMNS, request_of, task_payloads, tasks
from core.settings import Settings
from core.status import Status

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def validation_failed(exc: ValidationError) -> ValidationFailed:
    details = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "(body)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        entry: dict[str, Any] = {"field": field, "message": message}
        if error["type"] != "missing" and isinstance(error.get("input"), str | int | float):
            entry["value"] = error["input"]
        details.append(entry)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return ValidationFailed(summary, details=details)


def payload_invalid(problems: list[Problem]) -> ValidationFailed:
    """The 422 for a payload its routine's schema refuses: one detail per problem."""
    details = []
    for problem in problems:
        entry: dict[str, Any] = {"field": problem.field(), "message": problem.message}
        if problem.value is not None:
            entry["value"] = problem.value
        details.append(entry)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    error = ValidationFailed(summary, details=details)
    error.field = details[0]["field"]
    return error


def _too_deep(limit: int) -> ValidationFailed:
    message = f"nested more than {limit} levels deep (PAYLOAD_MAX_DEPTH)"
    return ValidationFailed(
        f"payload: {message}", details=[{"field": "payload", "message": message}]
    )


def parse_model(model: type[M], body: Any) -> M:
    """`body` checked against `model`; ValidationFailed names each field that is wrong."""
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def parse_submission(body: Any) -> SubmitRequest:
    return parse_model(SubmitRequest, body)


@dataclass
class Accepted:
    """A task accepted now, or known already (a repeat of its idempotency key)."""

    request: TaskRequest
    status: str = Status.ACCEPTED.value
    replay: bool = False

    @property
    def task_id(self) -> str:
        return self.request.task_id

    def body(self) -> AcceptedTask:
        request = self.request
        return {
            "task_id": request.task_id,
            "status": self.status,
            "team": request.team,
            "routine": request.routine,
            "priority": request.priority.value,
            "accepted_at": isoformat(request.accepted_at),
            "run_at": isoformat(request.run_at) if request.run_at else None,
            "expires_at": isoformat(request.expires_at) if request.expires_at else None,
            "idempotent_replay": self.replay,
            "links": task_links(request.task_id),
        }


Outcome = Accepted | ApiError


@dataclass
class Submission:
    settings: Settings
    _: KW_ONLY
    engine: Engine
    submitter: KafkaSubmitter
    cache: AcceptedCache
    policy: RoutingPolicy
    limiter: RateLimiter | None = None

    def submit(self, principal: Principal, items: list[SubmitRequest | ApiError]) -> list[Outcome]:
        """Accept every valid item; each item gets its own outcome, in order."""
        outcomes: list[Outcome | None] = [None] * len(items)
        requests: dict[int, TaskRequest] = {}
        now = utcnow()
        encoded: dict[str, bytes] = {}
        for index, item in enumerate(items):
            if isinstance(item, ApiError):
                outcomes[index] = item
                continue
            try:
                request = requests[index] = self._request(principal, item, now)
                encoded[request.task_id] = self._encode(request)
                # After the depth and size checks: the schema check walks the payload.
                self._check_payload(request)
            except ApiError as exc:
                requests.pop(index, None)
                outcomes[index] = exc
        existing = self._existing({r.task_id for r in requests.values() if r.idempotency_key})
        to_send: dict[str, TaskRequest] = {}
        for index, request in requests.items():
            found = existing.get(request.task_id)
            if found is not None:
                outcomes[index] = found
            else:
                to_send.setdefault(request.task_id, request)
        refused = self._over_limit(to_send)
        for task_id in refused:
            del to_send[task_id]
        self._store_large_payloads(to_send, encoded)
        delivered: dict[str, Outcome] = {
            **refused,
            **self._produce(list(to_send.values()), encoded),
        }
        for index, request in requests.items():
            if outcomes[index] is None:
                outcomes[index] = delivered[request.task_id]
        # The submitter has put the accepted requests in the cache before waking us, so a
        # GET right after the 202 finds them.
        accepted = [o for o in delivered.values() if isinstance(o, Accepted)]
        counts = Counter(
            (a.request.team, a.request.priority.value, a.request.routine) for a in accepted
        )
        for labels, count in counts.items():
            SUBMITTED.labels(*labels).inc(count)
        return [o for o in outcomes if o is not None]

    def _request(self, principal: Principal, item: SubmitRequest, now: datetime) -> TaskRequest:
        if item.team not in self.settings.teams:
            raise ValidationFailed.about("team", "unknown team", value=item.team)
        principal.scope(item.team)
        # The routine first, then the priority it may have: each error names its field.
        try:
            self.policy.spec(item.routine)
        except RoutingError as exc:
            raise ValidationFailed.about("routine", str(exc)) from None
        try:
            priority = self.policy.check(item.routine, item.priority)
        except RoutingError as exc:
            raise ValidationFailed.about("priority", str(exc)) from None
        if item.idempotency_key is not None:
            task_id = str(idempotent_task_id(item.team, item.idempotency_key))
        else:
            task_id = uuid7_text()
        run_at, expires_at = self._timing(item, now)
        return TaskRequest(
            task_id=task_id,
            team=item.team,
            routine=item.routine,
            priority=priority,
            accepted_at=now,
            payload=item.payload,
            idempotency_key=item.idempotency_key,
            run_at=run_at,
            expires_at=expires_at,
        )

    def _timing(
        self, item: SubmitRequest, now: datetime
    ) -> tuple[datetime | None, datetime | None]:
        """(run_at, expires_at) of a submit: a run time in the past is now (no schedule);
        each error names the field it is about."""
        for first, second in (("run_at", "delay_seconds"), ("expires_at", "max_wait_seconds")):
            if getattr(item, first) is not None and getattr(item, second) is not None:
                raise ValidationFailed.about(second, f"give {first} or {second}, not both")
        field = "run_at" if item.run_at is not None else "delay_seconds"
        if item.run_at is not None:
            run_at: datetime | None = item.run_at.astimezone(UTC)
        elif item.delay_seconds is not None:
            run_at = now + timedelta(seconds=item.delay_seconds)
        else:
            run_at = None
        horizon = timedelta(days=self.settings.schedule_max_days)
        if run_at is not None and run_at - now > horizon:
            raise ValidationFailed.about(
                field,
                f"more than {self.settings.schedule_max_days:g} days ahead (SCHEDULE_MAX_DAYS)",
            )
        if run_at is not None and run_at <= now:
            run_at = None
        due = run_at or now
        # An expires_at already past (or before run_at) is taken as given: the task
        # ends EXPIRED without running, as any task not started by then.
        expires_at: datetime | None = None
        if item.expires_at is not None:
            expires_at = item.expires_at.astimezone(UTC)
        elif item.max_wait_seconds is not None:
            expires_at = due + timedelta(seconds=item.max_wait_seconds)
        return run_at, expires_at

    def _encode(self, request: TaskRequest) -> bytes:
        """The request message. ValidationFailed if its payload nests deeper than
        PAYLOAD_MAX_DEPTH; PayloadTooLarge if it would not fit Kafka with the room a dead
        letter needs (core.limits)."""
        depth_limit = self.settings.payload_max_depth
        try:
            value = request.encode()
        except TypeError:  # orjson.JSONEncodeError: deeper than it writes, so than the limit
            raise _too_deep(depth_limit) from None
        if request.payload and deeper_than(depth_limit, request.payload, value):
            raise _too_deep(depth_limit)
        limit = self.settings.limits.request_max_bytes
        if len(value) > limit:
            message = (
                f"the task's request would be {len(value)} bytes; at most {limit} "
                "(KAFKA_MESSAGE_MAX_BYTES, less room for the key and dead-letter headers)"
            )
            raise PayloadTooLarge(
                f"payload: {message}", details=[{"field": "payload", "message": message}]
            )
        return value

    def _check_payload(self, request: TaskRequest) -> None:
        """ValidationFailed naming each field of the payload that its routine's schema
        refuses (`payload.ms`); an omitted payload is checked as `{}`."""
        schema = self.policy.spec(request.routine).payload
        if schema is None or schema.takes_anything:
            return
        problems = schema.problems(request.payload or {})
        if problems:
            raise payload_invalid(problems)

    def _store_large_payloads(
        self, to_send: dict[str, TaskRequest], encoded: dict[str, bytes]
    ) -> None:
        """Payloads too large to ride in the ACCEPTED event are stored before their
        request is produced (a request that then fails leaves an unread row, no task)."""
        inline = self.settings.limits.inline_payload_max_bytes
        large = [
            {"task_id": uuid.UUID(task_id), "payload": request.payload}
            for task_id, request in to_send.items()
            if len(encoded[task_id]) > inline
        ]
        if large:

            def store() -> None:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(task_payloads).on_conflict_do_nothing(index_elements=["task_id"]),
                        large,
                    )

            once_more_if_disconnected(store)  # stored twice is stored once (no conflict)

    def _existing(self, task_ids: set[str]) -> dict[str, Accepted]:
        if not task_ids:
            return {}
        found = {
            task_id: Accepted(r, replay=True)
            for task_id, r in self.cache.requests(sorted(task_ids)).items()
        }
        try:

            def read() -> Sequence[Any]:
                with self.engine.connect() as conn:
                    return conn.execute(
                        select(*REQUEST_COLUMNS, tasks.c.status).where(
                            tasks.c.task_id.in_([uuid.UUID(t) for t in task_ids])
                        )
                    ).all()

            rows = once_more_if_disconnected(read)
        except SQLAlchemyError as exc:
            # Without the lookup a repeat is produced again; the bridge runs it once.
            log.warning("idempotency lookup failed: %s", exc)
            return found
        return found | {
            str(row.task_id): Accepted(request_of(row), status=row.status, replay=True)
            for row in rows
        }

    def _over_limit(self, to_send: dict[str, TaskRequest]) -> dict[str, Outcome]:
        """Charge each team's rate limit for its new tasks; a team over its limit has all
        of this request's tasks refused (429)."""
        if self.limiter is None:
            return {}
        per_team: dict[str, list[str]] = {}
        for task_id, request in to_send.items():
            per_team.setdefault(request.team, []).append(task_id)
        refused: dict[str, Outcome] = {}
        for team, task_ids in per_team.items():
            try:
                self.limiter.take(team, len(task_ids))
            except TooManyRequests as exc:
                refused.update({task_id: exc for task_id in task_ids})
        return refused

    def _produce(
        self, requests: list[TaskRequest], encoded: dict[str, bytes]
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        if not requests:
            return outcomes
        answers = self.submitter.send(
            [
                (self.settings.request_topic(r.team), r.task_id.encode(), encoded[r.task_id])
                for r in requests
            ]
        )
        for request, error in zip(requests, answers, strict=True):
            outcomes[request.task_id] = error or Accepted(request)
        return outcomes
