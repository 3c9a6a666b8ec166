"""`/dashboard`: a live page of the stream statistics. The page holds no figures and needs
no key; it asks for an API key (kept in the tab's sessionStorage) and reads everything
from `/api/v1/stats/stream` with `Authorization: Bearer`, so a team key shows that team
only. Scripts and styles are served from app/static/ (no CDN).

The page carries the contract its script draws with (statuses, outcomes, priorities and
their colours) as a JSON data block rendered from core/, so the script holds no list of
its own: a status added in core/status.py gets its tile, column, label and colour."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, make_response, render_template, request

from core.priority import COLORS, Priority
from core.priority import names as priority_names
from core.status import IN_FLIGHT, OUTCOMES, SUCCESS, Status
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


# How the page colours statuses, by what they mean: success; each other way to end (in the
# order core/status.py declares them, so each gets its own); scheduled; in flight; the rest.
SUCCESS_COLOR = "#1b5e20"
ENDED_COLORS = ("#b00020", "#6a1b9a", "#546e7a", "#8d6e00", "#ad1457", "#4e342e")
SCHEDULED_COLOR = "#5e35b1"
IN_FLIGHT_COLOR = "#0d47a1"
OTHER_COLOR = "#555555"


def status_colors() -> dict[str, str]:
    """A colour for every status (outcome tiles, table headers, the latest tasks)."""
    ended = itertools.cycle(ENDED_COLORS)
    colors = {}
    for status in Status:
        if status is SUCCESS:
            colors[status.value] = SUCCESS_COLOR
        elif status.terminal:
            colors[status.value] = next(ended)
        elif status is Status.SCHEDULED:
            colors[status.value] = SCHEDULED_COLOR
        elif status in IN_FLIGHT:
            colors[status.value] = IN_FLIGHT_COLOR
        else:
            colors[status.value] = OTHER_COLOR
    return colors


def page_contract() -> dict[str, Any]:
    """What dashboard.js needs to know of the domain, derived from core/."""
    return {
        "statuses": status_names(Status),
        "outcomes": status_names(OUTCOMES),
        "success": SUCCESS.value,
        "labels": {status.value: status.label for status in Status},
        "status_colors": status_colors(),
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
