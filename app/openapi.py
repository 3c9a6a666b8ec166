"""`/openapi.json`: the OpenAPI 3.1 document, generated from the bodies in app/models.py
(pydantic's JSON Schema) and the table of operations below. What depends on the settings
(teams, routines, the batch limit) is filled in from them. tests/app/test_openapi.py checks
that every route is in the table and every operation is a route."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from flask import Blueprint, Response, current_app
from pydantic import Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from typing_extensions import TypedDict

from app import models
from app.http import json_response
from app.stats_api import STREAM_SECONDS
from app.stats_view import StatsBody
from core.payloads import embed
from core.settings import Settings
from core.stream_stats import WINDOWS

blueprint = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
# Per routine: its payload's schema, and the submit body that carries it (core.payloads;
# the simulator reads the former from here).
PAYLOAD = "Payload."
SUBMIT = "SubmitRequest."


class StatsQuery(TypedDict, total=False):
    window: Annotated[str, Field(json_schema_extra={"enum": list(WINDOWS)})]
    team: Annotated[str, Field(description="an admin's choice of one team")]


class StatsStreamQuery(StatsQuery, total=False):
    max_seconds: Annotated[int, Field(ge=1, le=STREAM_SECONDS)]


ERRORS = {
    400: "Malformed request (not JSON, bad parameter)",
    401: "Missing or unknown API key",
    403: "The key's team may not act for that team",
    404: "No such task (or another team's)",
    409: "The task already ended; `details.status` says how",
    413: "Body larger than the limit",
    415: "Body is not application/json",
    422: "Well-formed but invalid (unknown routine, priority above the routine's maximum, a "
    "payload its routine's schema refuses, …); `details` names each field (`payload.ms`)",
    429: "Rate limited, or too many live streams; see Retry-After",
    503: "Kafka cannot take the request now; nothing was accepted",
}
STREAM = "text/event-stream"


@dataclass(frozen=True)
class Operation:
    """One method of one path. `answers` maps a status to its description and body type
    (None: no JSON body); an error status without one gets ERRORS' text and ErrorBody."""

    summary: str
    answers: Mapping[int, tuple[str, Any]]
    errors: tuple[int, ...] = ()
    body: Any = None
    query: Any = None
    description: str | None = None
    operation_id: str | None = None
    streams: bool = False  # 200 may be (or is, without a JSON type) text/event-stream
    public: bool = False  # needs no key
    content_type: str = "application/json"
    error_texts: Mapping[int, str] = field(default_factory=dict)


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/api/v1/tasks", "post"): Operation(
        "Submit a task",
        description="The body is one of `SubmitRequest.<routine>`: each routine declares the "
        "schema of its payload (`Payload.<routine>`), and a payload it refuses is a 422 whose "
        "`details` name each field at fault (`payload.ms`); nothing is accepted. A routine "
        "that declares no schema takes any JSON object; an omitted payload is checked as `{}`. "
        "With `wait`, the submit then waits for the task to end: 200 with the "
        "task if it ended in time, else 202 with the task as it is then. The submit's own "
        "errors come at once.",
        operation_id="submitTask",
        body=models.SubmitRequest,
        query=models.WaitQuery,
        answers={
            200: ("Submitted with `wait`, and ended in time: the task", models.Task),
            202: (
                "Accepted: durable in Kafka (with `wait`: the task as it is at the deadline)",
                models.AcceptedTask | models.Task,
            ),
        },
        errors=(400, 401, 403, 413, 415, 422, 429, 503),
    ),
    ("/api/v1/tasks", "get"): Operation(
        "A page of tasks, newest first",
        operation_id="listTasks",
        query=models.TaskListQuery,
        answers={200: ("A page; pass next_cursor back for the next one", models.TaskPage)},
        errors=(400, 401, 403),
    ),
    ("/api/v1/tasks/batch", "post"): Operation(
        "Submit up to API_BATCH_MAX tasks; each is answered on its own",
        description="Each item is checked as the single submit checks its body (one of "
        "`SubmitRequest.<routine>`, the payload against its routine's schema); an invalid item "
        "gets its own 422 in `results` and the others are accepted.",
        operation_id="submitBatch",
        body=models.SubmitBatch,
        answers={202: ("One result per item, in order", models.BatchAnswer)},
        errors=(400, 401, 413, 415, 422, 429, 503),
    ),
    ("/api/v1/tasks/{task_id}", "get"): Operation(
        "A task with its status, result and timeline",
        operation_id="getTask",
        query=models.WaitQuery,
        answers={200: ("The task (with `wait`: once ended, or at the deadline)", models.Task)},
        errors=(400, 401, 404),
    ),
    ("/api/v1/tasks/{task_id}/cancel", "post"): Operation(
        "Cancel a task, whatever stage it is at",
        description="The task ends CANCELLED and runs no further step: never dispatched if it "
        "waits (scheduled, or in the bridge), skipped at the claim if queued, no further "
        "attempt if retrying; a running routine sees `context.cancelled`, and with "
        "`terminate` its process is stopped after CANCEL_GRACE_SECONDS. Durable: it holds "
        "across restarts of every process. A repeat answers 202 again; the body is optional.",
        operation_id="cancelTask",
        body=models.CancelRequest,
        answers={202: ("Cancelled: the task ends CANCELLED", models.CancelledTask)},
        errors=(400, 401, 404, 409, 415, 422, 503),
    ),
    ("/api/v1/tasks/cancel", "post"): Operation(
        "Cancel several tasks; each is answered as the single cancel would be",
        operation_id="cancelTasks",
        body=models.CancelBatchRequest,
        answers={200: ("One result per task id, in order", models.CancelBatchAnswer)},
        errors=(400, 401, 415, 422, 503),
    ),
    ("/api/v1/tasks/{task_id}/events", "get"): Operation(
        "A task's recorded status events; with follow=1, live (SSE)",
        description="Without follow: the events recorded so far, in order. With follow=1: "
        "a text/event-stream that sends each recorded event once (`event: status`, `id: "
        "<event_id>`), then `event: end` after the terminal event or after 10 minutes.",
        operation_id="getTaskEvents",
        query=models.EventsQuery,
        answers={
            200: (
                "The events (JSON), or their live stream (follow=1)",
                list[models.RecordedEvent],
            )
        },
        streams=True,
        errors=(400, 401, 404, 429, 503),
        error_texts={503: "The task store cannot be reached"},
    ),
    ("/api/v1/stats", "get"): Operation(
        "Stream statistics over a sliding window",
        description="Counts by status (transitions seen, and terminal outcomes), success "
        "rate, throughput, in-flight tasks and latency percentiles (wait, run, end_to_end; "
        "p50/p90/p99/max in ms) overall and by team, priority and routine, computed "
        "continuously from the status stream. A team key gets its own team's figures "
        "only; an admin may narrow to a team. `totals` counts since the statistics started.",
        operation_id="getStats",
        query=StatsQuery,
        answers={200: ("The figures", StatsBody)},
        errors=(400, 401, 403, 503),
        error_texts={503: "No statistics yet, or Redis cannot be reached"},
    ),
    ("/api/v1/stats/stream", "get"): Operation(
        "Stream statistics live (server-sent events)",
        description="text/event-stream: `hello`, one `point` per chart point of the last "
        "15 minutes, then about once a second new `point`s and `stats` (the /api/v1/stats "
        "figures and the latest tasks), keep-alive comments, and `end` after max_seconds "
        f"(default and at most {STREAM_SECONDS}); clients reconnect.",
        operation_id="streamStats",
        query=StatsStreamQuery,
        answers={200: ("The live stream", None)},
        streams=True,
        errors=(400, 401, 403, 429, 503),
        error_texts={503: "No statistics yet, or Redis cannot be reached"},
    ),
    ("/dashboard", "get"): Operation(
        "The live dashboard (asks for an API key in the page)",
        answers={200: ("HTML page", None)},
        public=True,
        content_type="text/html",
    ),
    ("/dashboard/tasks/{task_id}", "get"): Operation(
        "One task's page: timeline, payload, result or error, and a Cancel button (asks "
        "for an API key in the page; an id that is not a UUID gets a page that says so)",
        answers={200: ("HTML page", None)},
        public=True,
        content_type="text/html",
    ),
    ("/docs", "get"): Operation(
        "This document, to read and try (Swagger UI)",
        answers={200: ("HTML page", None)},
        public=True,
        content_type="text/html",
    ),
    ("/healthz", "get"): Operation("The process is up", answers={200: ("Up", None)}, public=True),
    ("/readyz", "get"): Operation(
        "Kafka and Postgres are reachable",
        answers={200: ("Ready", None), 503: ("Not ready; `checks` says what is missing", None)},
        public=True,
    ),
    ("/metrics", "get"): Operation(
        "Prometheus metrics", answers={200: ("Prometheus text format", None)}, public=True
    ),
    ("/openapi.json", "get"): Operation(
        "This document", answers={200: ("OpenAPI 3.1", None)}, public=True
    ),
}


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _uses(path: str, method: str, op: Operation) -> Iterator[tuple[str, JsonSchemaMode, Any]]:
    """Where the operation uses a type (a key), how (mode), and the type."""
    if op.body is not None:
        yield f"{method} {path} body", "validation", op.body
    if op.query is not None:
        yield f"{method} {path} query", "validation", op.query
    for status, (_, answer) in op.answers.items():
        if answer is not None:
            yield f"{method} {path} {status}", "serialization", answer


@functools.cache
def _schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Each use's schema (a $ref for a named type) by its key, and the named types'
    schemas, made in one pass so that they share definitions."""
    inputs = [
        (key, mode, TypeAdapter(shape))
        for (path, method), op in OPERATIONS.items()
        for key, mode, shape in _uses(path, method, op)
    ]
    inputs.append(("error", "serialization", TypeAdapter(models.ErrorBody)))
    found, definitions = TypeAdapter.json_schemas(
        inputs, ref_template=REF, schema_generator=_Schemas
    )
    return {key: schema for (key, _), schema in found.items()}, definitions.get("$defs", {})


def _content(schema: Any, content_type: str = "application/json") -> dict[str, Any]:
    return {content_type: {"schema": schema if schema is not None else {"type": "string"}}}


def _parameters(query: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    """A query type's properties as query parameters (none is required)."""
    resolved = components[query["$ref"].rsplit("/", 1)[-1]]
    return [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in resolved["properties"].items()
    ]


def _operation(
    path: str, method: str, op: Operation, found: Mapping[Any, Any], components: dict[str, Any]
) -> dict[str, Any]:
    area = path.split("/")[3] if path.startswith("/api/v1/") else "service"
    out: dict[str, Any] = {"summary": op.summary, "tags": [area]}
    if op.description:
        out["description"] = op.description
    if op.operation_id:
        out["operationId"] = op.operation_id
    if op.public:
        out["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(path)
    ]
    if op.query is not None:
        parameters += _parameters(found[f"{method} {path} query"], components)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        schema = found[f"{method} {path} body"]
        out["requestBody"] = {"required": True, "content": _content(schema)}
    responses: dict[str, Any] = {}
    for status, (text, answer) in op.answers.items():
        response: dict[str, Any] = {"description": text}
        if answer is not None:
            response["content"] = _content(found[f"{method} {path} {status}"])
        elif op.streams or op.content_type != "application/json":
            response["content"] = _content(None, STREAM if op.streams else op.content_type)
        if op.streams and answer is not None:
            response["content"] |= _content(None, STREAM)
        responses[str(status)] = response
    for status in op.errors:
        text = op.error_texts.get(status, ERRORS[status])
        responses[str(status)] = {"description": text, "content": _content(found["error"])}
    out["responses"] = responses
    return out


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _fill_in(spec: dict[str, Any], settings: Settings) -> None:
    """What the settings decide: the teams, the routines and the batch limit."""
    schemas = spec["components"]["schemas"]
    submit = schemas["SubmitRequest"]["properties"]
    submit["team"]["enum"] = list(settings.teams)
    submit["routine"]["enum"] = sorted(settings.routine_table)
    schemas["SubmitBatch"]["properties"]["tasks"]["maxItems"] = settings.api_batch_max
    delay = submit["delay_seconds"]["anyOf"][0]
    delay["maximum"] = settings.schedule_max_days * 86_400
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "team":
                    parameter["schema"]["enum"] = list(settings.teams)


def _routine_payloads(spec: dict[str, Any], settings: Settings) -> None:
    """Each routine's payload schema as the component `Payload.<routine>`, and the submit
    body as one `SubmitRequest.<routine>` per routine (the routine a const, the payload
    that schema), told apart by `routine`. A payload that an omitted one (`{}`) would not
    satisfy is required, so that every body the document allows is accepted."""
    schemas = spec["components"]["schemas"]
    generic = schemas["SubmitRequest"]
    mapping: dict[str, str] = {}
    for name, routine in sorted(settings.routine_table.items()):
        checked = routine.payload
        payload_ref = REF.format(model=f"{PAYLOAD}{name}")
        if checked is None:
            schemas[f"{PAYLOAD}{name}"] = {
                "type": "object",
                "description": "Any JSON object: the routine declares no schema.",
            }
        else:
            schemas[f"{PAYLOAD}{name}"] = embed(checked.schema, payload_ref)
        variant = copy.deepcopy(generic)
        variant["title"] = f"Submit {name}"
        variant["properties"]["routine"] = {"type": "string", "const": name}
        if checked is None or checked.takes_empty:
            variant["properties"]["payload"] = {
                "anyOf": [{"$ref": payload_ref}, {"type": "null"}],
                "description": "Omitted or null: checked as {}.",
            }
        else:
            variant["properties"]["payload"] = {"$ref": payload_ref}
            variant["required"] = [*variant.get("required", []), "payload"]
        mapping[name] = REF.format(model=f"{SUBMIT}{name}")
        schemas[f"{SUBMIT}{name}"] = variant
    body = spec["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "routine", "mapping": mapping},
    }


def build_spec(settings: Settings) -> dict[str, Any]:
    found, named = _schemas()
    components = copy.deepcopy(named)
    paths: dict[str, Any] = {}
    for (path, method), op in OPERATIONS.items():
        paths.setdefault(path, {})[method] = _operation(path, method, op, found, components)
    for op in OPERATIONS.values():  # query types become parameters, not components
        if op.query is not None:
            components.pop(op.query.__name__, None)
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "Task platform API",
            "version": "1",
            "description": "Submit work for your team and follow it to its end. "
            "Authenticate with `Authorization: Bearer <key>` (`flask --app app keys create`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components,
        },
        "paths": paths,
    }
    _fill_in(spec, settings)
    _routine_payloads(spec, settings)
    return spec


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return json_response(build_spec(current_app.config["SETTINGS"]))
