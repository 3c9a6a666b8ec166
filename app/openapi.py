"""The OpenAPI 3.1 description of the API (`/openapi.json`) and a small docs page (`/docs`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from app.http import json_response
from core.settings import Settings
from core.status import Status

blueprint = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "Malformed request (not JSON, bad parameter)",
        401: "Missing or unknown API key",
        403: "The key's team may not act for that team",
        404: "No such task (or another team's)",
        413: "Body larger than the limit",
        415: "Body is not application/json",
        422: "Well-formed but invalid (unknown routine, priority above the routine's maximum, …)",
        429: "Rate limited; see Retry-After",
        503: "Kafka cannot take the request now; nothing was accepted",
    }
    return {str(code): _error(texts[code]) for code in codes}


def build_spec(settings: Settings) -> dict[str, Any]:
    priorities = ["high", "medium", "low"]
    submit = {
        "type": "object",
        "additionalProperties": False,
        "required": ["team", "routine"],
        "properties": {
            "team": {"type": "string", "enum": list(settings.teams)},
            "routine": {"type": "string", "enum": sorted(settings.routine_table)},
            "priority": {"type": "string", "enum": priorities},
            "payload": {"type": "object"},
            "idempotency_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": "^[^\\x00-\\x1f\\x7f]+$",
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["task_id", "status", "team", "routine", "priority", "accepted_at"],
        "properties": {
            "task_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": list(Status.__members__)},
            "team": {"type": "string"},
            "routine": {"type": "string"},
            "priority": {"type": "string", "enum": priorities},
            "accepted_at": {"type": "string", "format": "date-time"},
            "idempotent_replay": {"type": "boolean"},
            "links": {"type": "object"},
        },
    }
    task = {
        "type": "object",
        "properties": {
            "task_id": {"type": "string", "format": "uuid"},
            "team": {"type": "string"},
            "routine": {"type": "string"},
            "priority": {"type": "string"},
            "queue": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": list(Status.__members__)},
            "attempts": {"type": "integer"},
            "result": {},
            "error": {"type": ["string", "null"]},
            "payload": {"type": ["object", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "timeline": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string"},
                        "at": {"type": "string", "format": "date-time"},
                        "attempt": {"type": "integer"},
                        "queue": {"type": ["string", "null"]},
                        "detail": {"type": ["object", "null"]},
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Task platform API",
            "version": "1",
            "description": "Submit work for your team and follow it to its end.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "SubmitRequest": submit,
                "Accepted": accepted,
                "Task": task,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {},
                            },
                        }
                    },
                },
            },
        },
        "paths": {
            "/api/v1/tasks": {
                "post": {
                    "summary": "Submit a task",
                    "operationId": "submitTask",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SubmitRequest"}
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted: durable in Kafka",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
                        **_errors(400, 401, 403, 413, 415, 422, 429, 503),
                    },
                },
                "get": {
                    "summary": "A page of tasks, newest first",
                    "operationId": "listTasks",
                    "parameters": [
                        {
                            "name": "team",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(settings.teams)},
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(Status.__members__)},
                        },
                        {"name": "routine", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "A page; pass next_cursor back for the next one",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "tasks": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Task"},
                                            },
                                            "next_cursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403),
                    },
                },
            },
            "/api/v1/tasks/batch": {
                "post": {
                    "summary": "Submit up to API_BATCH_MAX tasks; each is answered on its own",
                    "operationId": "submitBatch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["tasks"],
                                    "properties": {
                                        "tasks": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": settings.api_batch_max,
                                            "description": "Each item is checked on its own "
                                            "as a SubmitRequest; an invalid item gets its own "
                                            "4xx result and does not fail the batch.",
                                            "items": {},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "One result per item, in order",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "accepted": {"type": "integer"},
                                            "rejected": {"type": "integer"},
                                            "results": {"type": "array"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 413, 415, 422, 429, 503),
                    },
                }
            },
            "/api/v1/tasks/{task_id}": {
                "get": {
                    "summary": "A task with its status, result and timeline",
                    "operationId": "getTask",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The task",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Task"}
                                }
                            },
                        },
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/api/v1/tasks/{task_id}/events": {
                "get": {
                    "summary": "A task's recorded status events; with follow=1, live (SSE)",
                    "description": (
                        "Without follow: the events recorded so far, in order. With follow=1: "
                        "a text/event-stream that sends each recorded event once (`event: "
                        "status`, `id: <event_id>`), then `event: end` after the terminal "
                        "event or after 10 minutes."
                    ),
                    "operationId": "getTaskEvents",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["0", "1", "false", "true"]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The events (JSON), or their live stream (follow=1)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["event_id", "status", "at", "attempt"],
                                            "properties": {
                                                "event_id": {"type": "string", "format": "uuid"},
                                                "status": {
                                                    "type": "string",
                                                    "enum": list(Status.__members__),
                                                },
                                                "at": {"type": "string", "format": "date-time"},
                                                "attempt": {"type": "integer"},
                                                "queue": {"type": ["string", "null"]},
                                                "detail": {"type": ["object", "null"]},
                                            },
                                        },
                                    }
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 404, 429),
                        "503": _error("The task store cannot be reached"),
                    },
                }
            },
            "/api/v1/stats": {
                "get": {
                    "summary": "Stream statistics over a sliding window",
                    "description": (
                        "Counts by status (transitions seen, and terminal outcomes), success "
                        "rate, throughput, in-flight tasks and latency percentiles (wait, run, "
                        "end_to_end; p50/p90/p99/max in ms) overall and by team, priority and "
                        "routine, computed continuously from the status stream. A team key "
                        "gets its own team's figures only; an admin may narrow to a team. "
                        "`totals` counts since the statistics started."
                    ),
                    "operationId": "getStats",
                    "parameters": [
                        {
                            "name": "window",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["1m", "5m", "15m"]},
                        },
                        {
                            "name": "team",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(settings.teams)},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The figures",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": [
                                            "window",
                                            "generated_at",
                                            "overall",
                                            "by_team",
                                            "by_priority",
                                            "by_routine",
                                            "totals",
                                        ],
                                        "properties": {
                                            "window": {"type": "string"},
                                            "window_seconds": {"type": "integer"},
                                            "covered_seconds": {"type": "integer"},
                                            "team": {"type": ["string", "null"]},
                                            "generated_at": {
                                                "type": "string",
                                                "format": "date-time",
                                            },
                                            "age_seconds": {"type": "number"},
                                            "relative_accuracy": {"type": "number"},
                                            "overall": {
                                                "type": "object",
                                                "properties": {
                                                    "transitions": {"type": "object"},
                                                    "outcomes": {"type": "object"},
                                                    "terminal": {"type": "integer"},
                                                    "success_rate": {"type": ["number", "null"]},
                                                    "throughput_per_s": {"type": "number"},
                                                    "in_flight": {"type": "integer"},
                                                    "latency_ms": {"type": "object"},
                                                },
                                            },
                                            "by_team": {"type": "object"},
                                            "by_priority": {"type": "object"},
                                            "by_routine": {"type": "object"},
                                            "totals": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403),
                        "503": _error("No statistics yet, or Redis cannot be reached"),
                    },
                }
            },
            "/api/v1/stats/stream": {
                "get": {
                    "summary": "Stream statistics live (server-sent events)",
                    "description": (
                        "text/event-stream: `hello`, one `point` per chart point of the last "
                        "15 minutes, then about once a second new `point`s and `stats` (the "
                        "/api/v1/stats figures and the latest tasks), keep-alive comments, and "
                        "`end` after max_seconds (default and at most 600); clients reconnect."
                    ),
                    "operationId": "streamStats",
                    "parameters": [
                        {
                            "name": "window",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["1m", "5m", "15m"]},
                        },
                        {
                            "name": "team",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(settings.teams)},
                        },
                        {
                            "name": "max_seconds",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 600},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The live stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 429),
                        "503": _error("No statistics yet, or Redis cannot be reached"),
                    },
                }
            },
            "/dashboard": {
                "get": {
                    "summary": "The live dashboard (asks for an API key in the page)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "HTML page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "security": [],
                    "responses": {"200": {"description": "Up"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka and Postgres are reachable",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "Not ready; `checks` says what is missing"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Task platform API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem}
.op{margin:1rem 0;padding:.6rem 1rem;border:1px solid #e4e4e4;border-radius:6px}
.m{font-weight:700;text-transform:uppercase;display:inline-block;width:4.5rem}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;font-size:13px}
</style></head><body>
<h1>Task platform API</h1>
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a>.
Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>.</p>
<div id="ops">loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(spec => {
  const out = [];
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const body = op.requestBody ? op.requestBody.content['application/json'].schema : null;
      const named = body && body.$ref ? body.$ref.split('/').pop() : null;
      const resolved = named ? spec.components.schemas[named] : body;
      const codes = Object.entries(op.responses).map(([c, r]) => c + ' ' + r.description);
      out.push('<div class="op"><span class="m">' + method + '</span><code>' + path +
        '</code><div>' + (op.summary || '') + '</div>' +
        (resolved ? '<pre>' + JSON.stringify(resolved, null, 2) + '</pre>' : '') +
        '<div><small>' + codes.join(' · ') + '</small></div></div>');
    }
  }
  document.getElementById('ops').innerHTML = out.join('');
});
</script></body></html>
"""


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return json_response(build_spec(current_app.config["SETTINGS"]))


@blueprint.get("/docs")
def docs() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html")
