"""`/docs`: the OpenAPI document as an interactive page (Swagger UI: read each operation,
authorise with a key, try it). Swagger UI's scripts and styles come from the pinned
swagger-ui-py package and are served from here, so the page works offline (no CDN)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import Blueprint, Response

_spec = importlib.util.find_spec("swagger_ui")
assert _spec is not None and _spec.submodule_search_locations, "swagger-ui-py is not installed"
ASSETS = Path(next(iter(_spec.submodule_search_locations))) / "static"

blueprint = Blueprint("docs", __name__, static_folder=ASSETS, static_url_path="/docs/static")

# Our scripts only (no inline script, no third party); Swagger UI sets inline styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Task platform API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
</head><body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body></html>
"""

START = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
});
"""


def _page(body: str, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blueprint.get("/docs")
def docs() -> Response:
    return _page(PAGE, "text/html")


@blueprint.get("/docs/start.js")
def start() -> Response:
    return _page(START, "text/javascript")
