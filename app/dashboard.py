"""`/dashboard`: a live page of the stream statistics. The page holds no figures and needs
no key; it asks for an API key (kept in the tab's sessionStorage) and reads everything
from `/api/v1/stats/stream` with `Authorization: Bearer`, so a team key shows that team
only. Scripts and styles are served from app/static/ (no CDN).

The page carries the contract its script draws with (statuses, outcomes, priorities and
their colours) as a JSON data block rendered from core/, so the script holds no list of
its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, make_response, render_template, request

from core.priority import COLORS, Priority
from core.priority import names as priority_names
from core.status import OUTCOMES, SUCCESS, Status
from core.status import names as status_names

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

blueprint = Blueprint(
    "dashboard",
    __name__,
    static_folder=STATIC,
    static_url_path="/dashboard/static",
    template_folder=HERE / "templates",
)

# Only our own scripts, styles and API: no inline script, no third-party origin, no framing.
# (The contract is a JSON data block, which a browser never runs.)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page_contract() -> dict[str, Any]:
    """What dashboard.js needs to know of the domain, derived from core/."""
    return {
        "statuses": status_names(Status),
        "outcomes": status_names(OUTCOMES),
        "success": SUCCESS.value,
        "labels": {status.value: status.label for status in Status},
        "priorities": priority_names(),
        "colors": {priority.value: COLORS[priority] for priority in Priority.ordered()},
    }


@blueprint.get("/dashboard")
def dashboard() -> Response:
    response = make_response(render_template("dashboard.html", contract=page_contract()))
    response.cache_control.no_cache = True
    response.add_etag()
    response.make_conditional(request)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
