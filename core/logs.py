"""Logging for every entry point: JSON lines (or text) with the stage and task fields.

Entry points call `configure_logging(settings, stage=...)` once. Modules log with
`logging.getLogger(__name__)` and pass task fields as `extra={"task_id": ...}`.
A redaction filter is the last line of defence: API keys and URL passwords never
reach a log line even if some code tried to log them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

from core.settings import Settings

TASK_FIELDS = ("task_id", "team", "priority", "routine", "queue", "status", "attempt")
_SECRET_PATTERNS = (
    (re.compile(r"tpk_[A-Za-z0-9_-]{8,}"), "tpk_***"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"']+"), r"\1***"),
    (re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{4,}"), r"\1***"),
    # A URL's password: `user:` may be empty (redis://:secret@), the password may hold `/`.
    (re.compile(r"(//[^:/@\s]*):[^@\s]+@"), r"\1:***@"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "stage": self.stage,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for field in TASK_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = str(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {stage} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{name}={record.__dict__[name]}"
            for name in TASK_FIELDS
            if record.__dict__.get(name) is not None
        )
        return redact(super().format(record) + (f" [{fields}]" if fields else ""))


def configure_logging(settings: Settings, *, stage: str) -> None:
    """Send every log record of this process to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(stage) if settings.log_format == "json" else TextFormatter(stage)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Chatty libraries stay at WARNING unless we debug.
    for noisy in ("kafka", "urllib3", "httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
        )
