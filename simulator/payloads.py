"""A dataset's payloads checked against the routines' payload schemas before anything is
sent, with the API's own check (core.payloads): a payload the platform would refuse with a
422 stops the dataset, each problem named as `requests[i].payload.ms: ...`.

Where the schemas come from: the platform's `/openapi.json` when there is an API to ask
(`run`, and `validate --api-url`), since that is what the platform will check; else this
environment's settings (`validate`: the built-in routines and ROUTINES, through core).
A routine the schemas do not name is not checked here: the platform decides whether it
knows it (a 422 in the report).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from core.payloads import PayloadSchema, Problem, SchemaError, extract
from core.settings import Settings
from simulator.dataset import Dataset, show
from simulator.errors import DatasetError, PlatformUnreachable

Schemas = Mapping[str, PayloadSchema | None]  # by routine; None: any JSON object

PAYLOAD_COMPONENT = "Payload."  # app/openapi.py publishes each routine's schema so
COMPONENTS = "#/components/schemas/"


def from_settings(settings: Settings) -> dict[str, PayloadSchema | None]:
    """The schemas this environment's settings give each routine."""
    return {name: spec.payload for name, spec in settings.routine_table.items()}


def from_document(document: Any) -> dict[str, PayloadSchema | None]:
    """The schemas an OpenAPI document of the platform publishes (`Payload.<routine>`
    components); empty if it publishes none (an older platform)."""
    components = document.get("components", {}) if isinstance(document, dict) else {}
    found: dict[str, PayloadSchema | None] = {}
    for key, schema in (components.get("schemas") or {}).items():
        if not key.startswith(PAYLOAD_COMPONENT):
            continue
        try:
            found[key.removeprefix(PAYLOAD_COMPONENT)] = PayloadSchema(
                extract(schema, f"{COMPONENTS}{key}")
            )
        except SchemaError:
            found[key.removeprefix(PAYLOAD_COMPONENT)] = None  # the platform checks it
    return found


def fetch(api_url: str, *, timeout: float = 10.0) -> dict[str, PayloadSchema | None]:
    """The schemas the platform at `api_url` publishes in /openapi.json (no key needed).
    PlatformUnreachable if it does not answer; empty if the document has none."""
    base = api_url.rstrip("/")
    try:
        response = httpx.get(f"{base}/openapi.json", timeout=timeout)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise PlatformUnreachable(f"cannot reach the platform at {base}: {reason}") from None
    if response.status_code != 200:
        return {}
    try:
        return from_document(response.json())
    except ValueError:
        return {}


def problems(dataset: Dataset, schemas: Schemas) -> list[str]:
    """Every payload problem in the dataset, as `requests[i].payload.<path>: what`; an
    omitted payload is checked as `{}`, as the API does."""
    found: list[str] = []
    for index, request in enumerate(dataset.requests):
        schema = schemas.get(request.routine)
        if schema is None:
            continue
        for problem in schema.problems(request.payload or {}):
            found.append(f"requests[{index}].{_where(problem)}: {_what(problem)}")
    return found


def check(dataset: Dataset, schemas: Schemas, *, source: str) -> None:
    """Raise DatasetError listing every payload the schemas refuse (nothing is sent)."""
    found = problems(dataset, schemas)
    if found:
        raise DatasetError(source, found)


def _where(problem: Problem) -> str:
    parts = ["payload"]
    for part in problem.path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def _what(problem: Problem) -> str:
    # In the dataset's own words (simulator.dataset): "is required", "is not a known field".
    if problem.kind == "required":
        return "is required"
    if problem.kind == "unknown":
        return "is not a known field"
    if problem.value is not None and show(problem.value) not in problem.message:
        return f"{show(problem.value)}: {problem.message}"
    return problem.message
