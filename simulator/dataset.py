"""The dataset format: a name, a description and timed requests, validated as a whole.

A request fires at `at` ("MM:SS", 00:00 to 06:00 inclusive) and may repeat `count` times,
`every` seconds ("MM:SS" or a number, fractions allowed) apart; every repeat must also fall
at or before 06:00. A request may ask for a scheduled run (`delay`), an expiry (`expires`)
and a cancel (`cancel_after`), each a duration in the same two forms. `parse_dataset`
checks the whole dataset and raises `DatasetError` listing every problem, each naming the
entry, the field and the value.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.priority import Priority
from core.settings import NAME_PATTERN
from simulator.errors import DatasetError

MAX_OFFSET = 360  # 06:00, in seconds
MAX_REQUESTS = 1_000_000  # after expanding count; a bigger dataset is surely a mistake
CLOCK_PATTERN = re.compile(r"^(\d{2}):(\d{2})$")
AT_SCHEMA_PATTERN = r"^(0[0-5]:[0-5][0-9]|06:00)$"
CLOCK_SCHEMA_PATTERN = r"^[0-9]{2}:[0-5][0-9]$"
# MM:SS other than 00:00, without look-ahead (not every JSON Schema validator has it).
POSITIVE_CLOCK_SCHEMA_PATTERN = (
    r"^([0-9][1-9]:[0-5][0-9]|[1-9]0:[0-5][0-9]|00:[0-5][1-9]|00:[1-5]0)$"
)
SCHEMA_PATH = Path(__file__).with_name("dataset.schema.json")
SCHEMA_ID = "https://taskplatform.invalid/simulator/dataset.schema.json"


def show(value: Any) -> str:
    """A value as it would appear in the JSON file, for error messages."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def parse_clock(text: str) -> int:
    """Seconds in "MM:SS" (seconds below 60); raises ValueError naming the value."""
    match = CLOCK_PATTERN.match(text)
    if not match or int(match.group(2)) >= 60:
        raise ValueError(f"{show(text)} is not MM:SS (two-digit minutes and seconds)")
    return int(match.group(1)) * 60 + int(match.group(2))


def format_clock(seconds: float) -> str:
    """Seconds as "MM:SS", with a fraction only when there is one (e.g. "08:15", "00:01.5")."""
    minutes, rest = divmod(seconds, 60)
    whole = f"{int(minutes):02d}:{int(rest):02d}"
    fraction = rest - int(rest)
    return whole if fraction < 1e-9 else f"{whole}{f'{fraction:.3f}'.rstrip('0')[1:]}"


def _check_at(text: str) -> str:
    if parse_clock(text) > MAX_OFFSET:
        raise ValueError(f"{show(text)} is after 06:00")
    return text


def _parse_seconds(value: Any) -> float:
    """A duration: "MM:SS" or a finite number of seconds >= 0; ValueError naming the value."""
    if isinstance(value, str):
        return float(parse_clock(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{show(value)} is neither MM:SS nor a number of seconds")
    if not math.isfinite(value):
        raise ValueError(f"{show(value)} is not a finite number of seconds")
    if value < 0:
        raise ValueError(f"{show(value)} is negative")
    return float(value)


def _parse_positive_seconds(value: Any) -> float:
    seconds = _parse_seconds(value)
    if seconds == 0:
        raise ValueError(f"{show(value)} is not more than 0")
    return seconds


def _duration_schema(description: str, *, positive: bool = False) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum" if positive else "minimum": 0}
    pattern = CLOCK_SCHEMA_PATTERN if not positive else POSITIVE_CLOCK_SCHEMA_PATTERN
    return {
        "description": description,
        "oneOf": [number, {"type": "string", "pattern": pattern}],
    }


def _check_name(text: str) -> str:
    if not NAME_PATTERN.match(text):
        raise ValueError(
            f"{show(text)} is not a name (a lowercase letter, then up to 39 of a-z 0-9 _ -)"
        )
    return text


Clock = Annotated[
    str,
    AfterValidator(_check_at),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AT_SCHEMA_PATTERN,
            "description": 'When the request fires: "MM:SS" from 00:00 to 06:00 inclusive.',
        }
    ),
]
Spacing = Annotated[
    float,
    BeforeValidator(_parse_seconds),
    WithJsonSchema(
        _duration_schema('Spacing between repeats: "MM:SS" or a number of seconds (>= 0).')
    ),
]
Delay = Annotated[
    float,
    BeforeValidator(_parse_seconds),
    WithJsonSchema(
        _duration_schema(
            "A scheduled run: the task should run this long after the request is sent "
            '(sent as delay_seconds, divided by --speed); "MM:SS" or seconds (>= 0).'
        )
    ),
]
Expiry = Annotated[
    float,
    BeforeValidator(_parse_positive_seconds),
    WithJsonSchema(
        _duration_schema(
            "An expiry: a task not started this long after it is due ends EXPIRED, "
            'never run (sent as max_wait_seconds, divided by --speed); "MM:SS" or seconds (> 0).',
            positive=True,
        )
    ),
]
CancelAfter = Annotated[
    float,
    BeforeValidator(_parse_seconds),
    WithJsonSchema(
        _duration_schema(
            "Cancel the task this long after its submit is answered 202 (divided by "
            '--speed); "MM:SS" or seconds (>= 0).'
        )
    ),
]
Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern}),
]
Level = Annotated[
    Priority,
    WithJsonSchema({"type": "string", "enum": [priority.value for priority in Priority.ordered()]}),
]


class Request(BaseModel):
    """One timed request, possibly repeated. Field order matters: `count` is checked
    against the already validated `at` and `every`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    at: Clock
    team: Name = Field(description="The team the task is submitted for.")
    routine: Name = Field(description="The routine to run (noop, echo, sleep, cpu, fail, ...).")
    priority: Level | None = Field(
        default=None, description="Requested priority; omitted: the platform's default."
    )
    payload: dict[str, Any] | None = Field(
        default=None, description="The routine's input, a JSON object; omitted: {}."
    )
    every: Spacing | None = None
    count: int = Field(
        default=1,
        ge=1,
        description="How many times the request fires (default 1); with count > 1, `every` "
        "is required and the last repeat must fall at or before 06:00.",
    )
    delay: Delay | None = None
    expires: Expiry | None = None
    cancel_after: CancelAfter | None = None

    @field_validator("count")
    @classmethod
    def _repeats_fit(cls, count: int, info: ValidationInfo) -> int:
        if count == 1 or "at" not in info.data:
            return count
        every = info.data.get("every")
        if every is None:
            if "every" in info.data:
                raise ValueError(f"{count} repeats need `every` (use 0 for all at once)")
            return count  # `every` itself was invalid and is reported on its own
        last = parse_clock(info.data["at"]) + (count - 1) * every
        if last > MAX_OFFSET + 1e-9:
            raise ValueError(
                f"{count} repeats every {every:g}s from {info.data['at']} run to "
                f"{format_clock(last)}, after 06:00"
            )
        return count

    @property
    def offset(self) -> int:
        """Seconds from the start of the day to the first firing."""
        return parse_clock(self.at)

    def offsets(self) -> list[float]:
        """Seconds from the start of the day to each firing, in order."""
        spacing = self.every or 0.0
        return [self.offset + i * spacing for i in range(self.count)]


class Dataset(BaseModel):
    """A replayable day: a name, a description and its timed requests."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="Simulator dataset",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
            "description": "Timed requests that `python -m simulator run` replays against the "
            "platform's API. `at` and the last repeat of each request fall within 06:00.",
        },
    )

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    requests: list[Request] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_too_big(self) -> Dataset:
        if self.size > MAX_REQUESTS:
            raise ValueError(f"expands to {self.size} requests, more than {MAX_REQUESTS}")
        return self

    @property
    def size(self) -> int:
        """How many requests the dataset sends, repeats included."""
        return sum(request.count for request in self.requests)


def parse_dataset(raw: bytes | str, *, source: str = "dataset") -> Dataset:
    """The dataset in `raw` JSON; raises DatasetError listing every problem found."""
    try:
        return Dataset.model_validate_json(raw)
    except ValidationError as exc:
        raise DatasetError(source, describe_errors(exc)) from None


def load_dataset(path: str | Path) -> Dataset:
    """The dataset in the file at `path`; raises DatasetError if it is unreadable or invalid."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_dataset(raw, source=str(path))


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem: `where: what`, e.g. `requests[1].at: "06:01" is after 06:00`."""
    return [f"{_where(error['loc'])}: {_what(error)}" for error in exc.errors()]


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part.startswith(("function-after", "function-before")):
            continue  # pydantic's name for a validator step, not a field
        else:
            parts.append(f".{part}" if parts else part)
    return "".join(parts) or "dataset"


def _what(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"is not a known field (value {show(value)})"
    if kind in ("enum", "literal_error"):
        return f"{show(value)} is not one of {error['ctx']['expected'].replace(chr(39), '')}"
    if kind == "json_invalid":
        return f"the file is not valid JSON ({error['ctx']['error']})"
    message: str = error["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"{show(value)}: {message[0].lower()}{message[1:]}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the dataset format, as published in dataset.schema.json."""
    return Dataset.model_json_schema()


def schema_text() -> str:
    """The exact text of dataset.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
