"""Request helpers: strict JSON bodies and checked query parameters."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from app.errors import BadRequest, UnsupportedMediaType


def read_json(*, required: bool = True) -> Any:
    """The request body as JSON; anything that is not strictly JSON (NaN, bad UTF-8,
    trailing garbage) is a 400, a non-JSON content type a 415. Not `required`: no body at
    all is None."""
    if not required and not request.content_length and not request.mimetype:
        return None
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.mimetype or 'no content type'}"
        )
    raw = request.get_data(cache=False)
    if not raw and not required:
        return None
    if not raw:
        raise BadRequest("the body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    return body


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def query_args(allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise BadRequest(f"query parameter {name!r} is given more than once")
    return {k: v for k, v in request.args.items()}
