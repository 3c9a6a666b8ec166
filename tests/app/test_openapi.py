"""The OpenAPI document and the /docs page, without the stack: the document covers every
route and only routes, derives what it lists from its single sources, and the page
loads everything it needs from this server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.models import SubmitRequest
from app.openapi import OPERATIONS, build_spec
from core.payloads import PayloadSchema, SleepPayload
from core.priority import names as priority_names
from core.settings import Settings
from core.status import names as status_names


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings())


def _routes(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static") or rule.rule.startswith("/docs/"):
            continue  # a page's own files
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        found |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return found


def test_every_route_is_documented_and_every_operation_is_a_route(app: Flask) -> None:
    assert _routes(app) == set(OPERATIONS)


def test_the_document_is_what_the_app_serves_and_every_reference_resolves(app: Flask) -> None:
    spec = app.test_client().get("/openapi.json").get_json()
    assert spec == build_spec(Settings())
    assert spec["openapi"] == "3.1.0"

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/") and resolve(spec, ref) is not None, ref


def resolve(document: Any, ref: str) -> Any:
    """What a local reference ("#/a/b") points to in the document (None: nothing)."""
    node = document
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


REPORT: dict[str, Any] = {
    "type": "object",
    "$defs": {"day": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
    "properties": {"day": {"$ref": "#/$defs/day"}},
    "required": ["day"],
}


def test_each_routine_shows_its_payload_schema_and_the_submit_body_is_one_per_routine() -> None:
    settings = Settings(
        routines={
            "report": {"function": "reports.jobs:run", "payload_schema": REPORT},
            "plain": {"function": "reports.jobs:plain"},
        }
    )
    spec = build_spec(settings)
    schemas = spec["components"]["schemas"]
    submit = spec["paths"]["/api/v1/tasks"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    routines = sorted(settings.routine_table)
    assert body["discriminator"]["propertyName"] == "routine"
    assert list(body["discriminator"]["mapping"]) == routines
    assert [one["$ref"] for one in body["oneOf"]] == list(body["discriminator"]["mapping"].values())
    assert "payload.ms" in submit["description"]
    for name in routines:
        variant = resolve(spec, body["discriminator"]["mapping"][name])
        assert variant["properties"]["routine"] == {"type": "string", "const": name}
        assert set(variant["properties"]) == set(SubmitRequest.model_fields)
        assert f"Payload.{name}" in schemas
    assert schemas["Payload.sleep"] == PayloadSchema.of_model(SleepPayload).schema
    assert schemas["Payload.plain"]["type"] == "object"  # no schema: any object
    # A team's schema, its own references pointing within the document; its payload is
    # required, since an omitted one ({}) would not do.
    day_ref = schemas["Payload.report"]["properties"]["day"]["$ref"]
    assert resolve(spec, day_ref) == REPORT["$defs"]["day"]
    report = schemas["SubmitRequest.report"]
    assert "payload" in report["required"]
    assert "payload" not in schemas["SubmitRequest.sleep"]["required"]


def test_the_document_derives_statuses_priorities_and_settings() -> None:
    settings = Settings(teams="alpha,delta", api_batch_max=7)
    spec = build_spec(settings)
    schemas = spec["components"]["schemas"]
    assert schemas["Status"]["enum"] == status_names()
    assert schemas["Priority"]["enum"] == priority_names()
    assert schemas["Task"]["properties"]["status"]["enum"] == status_names()
    submit = schemas["SubmitRequest"]
    assert submit["properties"]["team"]["enum"] == ["alpha", "delta"]
    assert submit["properties"]["routine"]["enum"] == sorted(settings.routine_table)
    assert set(submit["properties"]) == set(SubmitRequest.model_fields)
    assert submit["additionalProperties"] is False
    assert schemas["SubmitBatch"]["properties"]["tasks"]["maxItems"] == 7
    listing = spec["paths"]["/api/v1/tasks"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("enum") for p in listing}["team"] == ["alpha", "delta"]


def test_the_docs_page_loads_only_from_this_server(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "http" not in html  # no CDN: users may be offline
    linked = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/docs/static/swagger-ui-bundle.js" in linked
    for url in linked:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content_length or response.get_data(), url
        response.close()
