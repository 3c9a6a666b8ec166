"""The API's error tree, and the one handler that turns it (and Werkzeug's) into JSON:
`{"error": {"code", "message", "details"}}`. Client mistakes are 4xx, never 5xx."""

from __future__ import annotations

import logging
from typing import Any, Self

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.models import ErrorBody

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"
    field: str | None = None  # the request field the error is about, if one

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    @classmethod
    def about(cls, field: str, message: str, *, value: str | None = None) -> Self:
        """An error about one field of the request. Its message is `<field>: <message>`
        (then the value, quoted, if given), and its details name the field, so clients
        and our own code read `field` instead of parsing the text."""
        entry: dict[str, Any] = {"field": field, "message": message}
        summary = f"{field}: {message}"
        if value is not None:
            entry["value"] = value
            summary += f" {value!r}"
        error = cls(summary, details=[entry])
        error.field = field
        return error

    def body(self) -> ErrorBody:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(ApiError):
    status, code = 422, "validation_error"


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_response(error: ApiError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


DRAIN_FACTOR = 4


def _drain_body(at_most: int) -> None:
    """Read what is left of a refused body (up to `at_most` bytes) before answering: a
    server that closes while the client still sends makes the client's network stack
    drop the answer (a reset), and the client sees a broken connection instead of 413."""
    stream = request.environ.get("wsgi.input")
    left = min(request.content_length or 0, at_most)
    try:
        while left > 0 and stream is not None:
            chunk = stream.read(min(65536, left))
            if not chunk:
                break
            left -= len(chunk)
    except OSError:
        pass  # the client went away: nothing to answer


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"]
        _drain_body(limit * DRAIN_FACTOR)
        return error_response(
            PayloadTooLarge(
                f"the body is too large: the limit is {limit} bytes (API_MAX_BODY_BYTES)",
                headers={"Connection": "close"},
            )
        )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        body = ApiError(
            error.description or error.name or "error",
            status=error.code or 500,
            code=(error.name or "error").lower().replace(" ", "_"),
        )
        response = error_response(body)
        if error.code == 405 and error.response is None:
            allowed = getattr(error, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(OperationalError)
    def _database_away(error: OperationalError) -> Response:
        log.warning("database unavailable: %s", error.orig)
        return error_response(
            Unavailable("the database is unavailable; retry shortly", headers={"Retry-After": "1"})
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(
            ApiError("internal error; it has been logged", status=500, code="internal_error")
        )
