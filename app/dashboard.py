"""`/dashboard`: a live page of the stream statistics, and `/dashboard/tasks/<id>`: one
task's page (its timeline, payload, result or error, and a Cancel button). The pages hold
no figures and need no key; they ask for an API key (kept in the tab's sessionStorage) and
read everything from the API (`/api/v1/stats/stream`, `/api/v1/tasks...`) with
`Authorization: Bearer`, so a team key shows that team only. Scripts and styles are served
from app/static/ (no CDN).

The page carries the contract its script draws with (statuses, outcomes, priorities and
their colours) as a JSON data block rendered from core/, so the script holds no list of
its own: a status added in core/status.py gets its tile, column, label and colour."""

from __future__ import annotations

import itertools
import uuid
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


# Where a task is at each step, for the task page's timeline when the event does not say
# (a CANCELLED or EXPIRED event names its stage in its detail; a SCHEDULED one, who holds it).
STEP_STAGES: dict[Status, str] = {
    Status.ACCEPTED: "accepted by the API",
    Status.SCHEDULED: "held until its run_at",
    Status.QUEUED: "on its queue",
    Status.STARTED: "running on a worker",
    Status.RETRYING: "waiting to retry",
    Status.SUCCEEDED: "ended on a worker",
    Status.FAILED: "ended",
    Status.DEAD_LETTERED: "sent to the dead-letter topic",
    Status.CANCELLED: "cancelled",
    Status.EXPIRED: "expired before it started",
}


def page_contract() -> dict[str, Any]:
    """What the pages' scripts need to know of the domain, derived from core/."""
    return {
        "statuses": status_names(Status),
        "outcomes": status_names(OUTCOMES),
        "success": SUCCESS.value,
        "labels": {status.value: status.label for status in Status},
        "status_colors": status_colors(),
        # A status added in core/ alone has no words of its own here yet: its label.
        "stages": {
            status.value: STEP_STAGES.get(status, status.label.lower()) for status in Status
        },
        # The statuses the task page writes a note for.
        "named": {
            "cancelled": Status.CANCELLED.value,
            "retrying": Status.RETRYING.value,
            "scheduled": Status.SCHEDULED.value,
        },
        "priorities": priority_names(),
        "colors": {priority.value: COLORS[priority] for priority in Priority.ordered()},
    }


def _page(template: str, **context: Any) -> Response:
    """A page with the contract, its security headers, and revalidation by ETag."""
    response = make_response(render_template(template, contract=page_contract(), **context))
    response.cache_control.no_cache = True
    response.add_etag()
    response.make_conditional(request)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blueprint.get("/dashboard")
def dashboard() -> Response:
    return _page("dashboard.html")


@blueprint.get("/dashboard/tasks/<task_id>")
def task_page(task_id: str) -> Response:
    """One task's page. The page itself holds nothing of the task (it reads the API with
    the tab's key, and says so when the key sees no such task); for an id that is not a
    UUID it says that instead. Always a 200: a page, whatever the id (an API error is
    JSON, and the API's fuzz test holds every 4xx to that)."""
    try:
        parsed = str(uuid.UUID(task_id))
    except ValueError:
        return _page("task.html", task_id=None, asked=task_id)
    return _page("task.html", task_id=parsed, asked=task_id)
