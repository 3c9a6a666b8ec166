"""`/api/v1/tasks`: submit one or many tasks, read one, list a page."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from app.accepted_cache import as_task_body
from app.api import principal
from app.errors import (
    ApiError,
    BadRequest,
    NotFound,
    TooManyRequests,
    Unavailable,
    ValidationFailed,
)
from app.http import json_response, query_args, read_json
from app.models import (
    MAX_PAGE,
    BatchAnswer,
    BatchResult,
    CancelBatchAnswer,
    CancelBatchRequest,
    CancelRequest,
    CancelResult,
    SubmitRequest,
)
from app.queries import BadCursor, decode_cursor, get_task, list_tasks
from app.services import services
from app.submission import Accepted, parse_model, parse_submission
from core.priority import names as priority_names
from core.status import Status

blueprint = Blueprint("tasks", __name__, url_prefix="/tasks")


@blueprint.post("")
def submit_one() -> Response:
    item = parse_submission(read_json())
    (outcome,) = services().submission.submit(principal(), [item])
    if isinstance(outcome, ApiError):
        raise outcome
    return json_response(outcome.body(), 202, {"Location": outcome.body()["links"]["self"]})


@blueprint.post("/batch")
def submit_batch() -> Response:
    body = read_json()
    if not isinstance(body, dict) or set(body) != {"tasks"}:
        raise ValidationFailed('the body must be {"tasks": [...]}')
    items = body["tasks"]
    limit = services().settings.api_batch_max
    if not isinstance(items, list) or not items:
        raise ValidationFailed("tasks must be a non-empty list")
    if len(items) > limit:
        raise ValidationFailed(f"tasks holds {len(items)} items; at most {limit} per batch")
    parsed: list[SubmitRequest | ApiError] = []
    for item in items:
        try:
            parsed.append(parse_submission(item))
        except ApiError as exc:
            parsed.append(exc)
    outcomes = services().submission.submit(principal(), parsed)
    results: list[BatchResult] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Accepted):
            results.append({"index": index, "status_code": 202, "task": outcome.body()})
        else:
            error = outcome.body()["error"]
            results.append({"index": index, "status_code": outcome.status, "error": error})
    accepted = sum(1 for r in results if r["status_code"] == 202)
    if accepted == 0 and all(isinstance(o, Unavailable) for o in outcomes):
        raise Unavailable("Kafka cannot take requests right now; nothing was accepted")
    limited = [o for o in outcomes if isinstance(o, TooManyRequests)]
    if limited and accepted == 0 and len(limited) == len(outcomes):
        raise limited[0]
    answer: BatchAnswer = {
        "accepted": accepted,
        "rejected": len(results) - accepted,
        "results": results,
    }
    return json_response(answer, 202)


@blueprint.post("/<task_id>/cancel")
def cancel_one(task_id: str) -> Response:
    """Cancel a task of the caller's team: 202 once the cancel holds (again for a repeat),
    409 if the task already ended otherwise, 404 if it is not the caller's."""
    body = read_json(required=False)
    asked = parse_model(CancelRequest, body if body is not None else {})
    answer = services().canceller.cancel(principal(), task_id, terminate=asked.terminate)
    return json_response(answer, 202)


@blueprint.post("/cancel")
def cancel_many() -> Response:
    """Cancel several tasks: each gets its own answer, as the single cancel would give."""
    asked = parse_model(CancelBatchRequest, read_json())
    canceller, caller = services().canceller, principal()
    results: list[CancelResult] = []
    for task_id in map(str, asked.task_ids):
        try:
            task = canceller.cancel(caller, task_id, terminate=asked.terminate)
            results.append({"task_id": task_id, "status_code": 202, "task": task})
        except ApiError as exc:
            if isinstance(exc, Unavailable):
                raise
            results.append(
                {"task_id": task_id, "status_code": exc.status, "error": exc.body()["error"]}
            )
    answer: CancelBatchAnswer = {
        "cancelled": sum(1 for r in results if r["status_code"] == 202),
        "results": results,
    }
    return json_response(answer, 200)


@blueprint.get("/<task_id>")
def read_one(task_id: str) -> Response:
    query_args(set())
    try:
        parsed = uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"no task {task_id!r}: task ids are UUIDs") from None
    task = get_task(services().engine, parsed)
    if task is None:
        # Accepted a moment ago and not yet recorded in Postgres.
        cached = services().submission.cache.requests([str(parsed)]).get(str(parsed))
        task = as_task_body(cached) if cached is not None else None
    # Another team's task is reported as missing: its existence is not ours to reveal.
    if task is None or not principal().may_act_for(task["team"]):
        raise NotFound(f"no task {task_id}")
    return json_response(task)


@blueprint.get("")
def read_page() -> Response:
    args = query_args({"team", "status", "routine", "priority", "limit", "cursor"})
    team = args.get("team")
    if team is not None and team not in services().settings.teams:
        raise BadRequest(f"team: unknown team {team!r}")
    team = principal().scope(team)
    status = args.get("status")
    if status is not None and status not in Status.__members__:
        raise BadRequest(f"status: {status!r} is not one of {', '.join(Status.__members__)}")
    routine = args.get("routine")
    priority = args.get("priority")
    if priority is not None and priority not in priority_names():
        raise BadRequest(f"priority: {priority!r} is not one of {', '.join(priority_names())}")
    limit_text = args.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise BadRequest(f"limit: {limit_text!r} is not a whole number from 1 to {MAX_PAGE}")
    cursor = None
    if "cursor" in args:
        try:
            cursor = decode_cursor(args["cursor"])
        except BadCursor as exc:
            raise BadRequest(f"cursor: {exc}") from None
    page = list_tasks(
        services().engine,
        team=team,
        status=status,
        routine=routine,
        priority=priority,
        limit=int(limit_text),
        cursor=cursor,
    )
    return json_response(page)
