"""`/dashboard`: a live page of the stream statistics. The page itself holds no data and
needs no key; it asks for an API key (kept in the tab's sessionStorage) and reads
everything from `/api/v1/stats/stream` with `Authorization: Bearer`, so a team key shows
that team only. Scripts and styles are served from app/static/ (no CDN)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).resolve().parent / "static"

blueprint = Blueprint(
    "dashboard", __name__, static_folder=STATIC, static_url_path="/dashboard/static"
)

# Only our own scripts, styles and API: no inline script, no third-party origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@blueprint.get("/dashboard")
def dashboard() -> Response:
    response = send_from_directory(STATIC, "dashboard.html", max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
