"""The client's reading of the API's answers."""

from __future__ import annotations

import json

from simulator.client import ended_status, error_of


def test_a_409_names_the_status_at_the_top_or_in_the_details() -> None:
    error = {"code": "conflict", "message": "already ended"}
    top = json.dumps({"error": error, "status": "FAILED"}).encode()
    nested = json.dumps({"error": {**error, "details": {"status": "EXPIRED"}}}).encode()
    assert (ended_status(top), ended_status(nested)) == ("FAILED", "EXPIRED")
    assert ended_status(json.dumps({"error": {**error, "details": None}}).encode()) is None
    assert ended_status(b"<html>busy</html>") is None
    assert error_of(top, 409) == ("conflict", "already ended")
    assert error_of(b"<html>busy</html>", 409) == ("http_409", "<html>busy</html>")
