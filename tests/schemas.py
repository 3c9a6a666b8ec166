"""Payload schemas that more than one test module gives a team routine."""

from __future__ import annotations

from typing import Any

# A report's payload: a day (YYYY-MM-DD) and at most three positive row numbers.
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"day": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
    "properties": {
        "day": {"$ref": "#/$defs/day"},
        "rows": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 3},
    },
    "required": ["day"],
    "additionalProperties": False,
}
