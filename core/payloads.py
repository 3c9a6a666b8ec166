"""What a routine's payload may be, declared once: a pydantic model for each built-in
routine, a JSON Schema in `ROUTINES` for the teams' own.

The API checks every submitted payload against its routine's schema (a 422 naming
`payload.<field>`, nothing accepted); the simulator checks a dataset's payloads with the
same `PayloadSchema` before it sends anything; the OpenAPI document shows each schema;
the built-in routines read their payload through the same models. A routine without a
schema takes any JSON object.

Every check is a JSON Schema check (jsonschema-rs, compiled once per schema): a built-in
routine's schema is its model's JSON Schema, so the API, the simulator and the document
agree on one text. The models are lax (pydantic's default), so whatever the schema lets
in (e.g. `5.0` for an integer) the routine also reads.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema

# The built-in routines' payloads.

MAX_SLEEP_MS = 3_600_000  # an hour; a sleep longer than its routine's timeout ends FAILED
MAX_CPU_ITERATIONS = 100_000_000
MAX_FAIL_TIMES = 1000


class AnyPayload(BaseModel):
    """Any JSON object (noop ignores it, echo returns it)."""

    model_config = ConfigDict(extra="allow")


class SleepPayload(BaseModel):
    """Sleeps `ms` milliseconds (an I/O-bound task)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ms: int = Field(default=100, ge=0, le=MAX_SLEEP_MS, description="milliseconds to sleep")


class CpuPayload(BaseModel):
    """Hashes `iterations` times (a CPU-bound task)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(
        default=10_000, ge=0, le=MAX_CPU_ITERATIONS, description="SHA-256 rounds"
    )


class FailPayload(BaseModel):
    """Fails its first `times` attempts, then succeeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    times: int = Field(default=1, ge=0, le=MAX_FAIL_TIMES, description="attempts that fail")


# By the routine's function, not its name: a routine in ROUTINES that runs a built-in
# function (an override of `sleep` with a longer timeout, say) reads the same payload.
BUILTIN_PAYLOADS: dict[str, type[BaseModel]] = {
    "tasks.routines:noop": AnyPayload,
    "tasks.routines:echo": AnyPayload,
    "tasks.routines:sleep": SleepPayload,
    "tasks.routines:cpu": CpuPayload,
    "tasks.routines:fail": FailPayload,
}

# Problems reported for one payload, at most (a payload may be wrong in many places).
MAX_PROBLEMS = 20

# Keywords that only describe: a schema of nothing else but `"type": "object"` (and
# `"additionalProperties": true`, `"properties": {}`) takes any object.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated"}
)


class SchemaError(ValueError):
    """A payload schema that is not a usable JSON Schema; the message says why."""


@dataclass(frozen=True)
class Problem:
    """One way a payload does not match its schema. `path` leads from the payload to the
    value at fault (keys and list indexes; empty: the payload itself)."""

    path: tuple[str | int, ...]
    message: str
    value: Any = None  # the value at fault, when it is a scalar worth echoing
    kind: str = "invalid"  # or "required" (a field missing), "unknown" (a field not allowed)

    def field(self, prefix: str = "payload") -> str:
        """The path as the API names fields: `payload.ms`, `payload.items.0`."""
        return ".".join([prefix, *(str(part) for part in self.path)])


def _no_remote(uri: str) -> Any:
    raise SchemaError(f"{uri}: a payload schema may only refer within itself")


class PayloadSchema:
    """A payload's JSON Schema, compiled once. `problems(payload)` lists what is wrong
    (none: valid); `takes_anything` is true for a schema that every object matches, which
    needs no check; `takes_empty` says whether `{}` (an omitted payload) matches."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """Raises SchemaError if `schema` is not a valid JSON Schema (draft 2020-12 unless
        its `$schema` says otherwise; `format` is an annotation, as the draft has it),
        refers outside itself, or declares a type other than object."""
        if not isinstance(schema, Mapping):
            raise SchemaError("a payload schema is a JSON object")
        self.schema = dict(schema)
        try:
            self._validator = jsonschema_rs.validator_for(self.schema, retriever=_no_remote)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchemaError(f"not a valid JSON Schema: {first}") from None
        kind = schema.get("type", "object")
        if kind != "object" and not (isinstance(kind, list) and "object" in kind):
            raise SchemaError(f'a payload is a JSON object; the schema\'s "type" is {kind!r}')
        self.takes_anything = _takes_any_object(self.schema)
        self.takes_empty = self._validator.is_valid({})

    @classmethod
    def of_model(cls, model: type[BaseModel]) -> PayloadSchema:
        return _compiled_model(model)

    def problems(self, payload: Any) -> list[Problem]:
        """What is wrong with `payload` (at most MAX_PROBLEMS); empty if it matches."""
        if self.takes_anything and isinstance(payload, dict):
            return []
        try:
            if self._validator.is_valid(payload):
                return []
            found: list[Problem] = []
            for error in self._validator.iter_errors(payload):
                found.extend(_problems_of(error))
                if len(found) >= MAX_PROBLEMS:
                    break
        except ValueError as exc:  # e.g. nested beyond what the validator converts
            return [Problem((), f"cannot be checked: {exc}")]
        return found[:MAX_PROBLEMS]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PayloadSchema) and other.schema == self.schema

    def __hash__(self) -> int:
        return hash(repr(sorted(self.schema)))

    def __repr__(self) -> str:
        return f"PayloadSchema({self.schema!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PayloadSchema, (self.schema,))  # the compiled validator does not pickle


class _NoFieldTitles(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every property ("Ms")."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@functools.cache
def _compiled_model(model: type[BaseModel]) -> PayloadSchema:
    return PayloadSchema(model.model_json_schema(schema_generator=_NoFieldTitles))


def builtin_schema(function: str) -> PayloadSchema | None:
    """The payload schema of a built-in routine function (`module:function`), or None."""
    model = BUILTIN_PAYLOADS.get(function)
    return _compiled_model(model) if model is not None else None


def _takes_any_object(schema: Mapping[str, Any]) -> bool:
    rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    if rest.pop("additionalProperties", True) is not True:
        return False
    if rest.pop("properties", {}) != {}:
        return False
    return rest in ({}, {"type": "object"})


def _problems_of(error: jsonschema_rs.ValidationError) -> Iterator[Problem]:
    path = tuple(error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        yield Problem((*path, kind.property), "Field required", kind="required")
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        for name in kind.unexpected:
            yield Problem((*path, name), "unknown field", kind="unknown")
    else:
        value = error.instance
        shown = value if isinstance(value, str | int | float) and len(repr(value)) <= 200 else None
        yield Problem(path, error.message, shown)


# Embedding a schema in a larger document (the OpenAPI document's components): its own
# references ("#/$defs/...") must then point within the document, and back again.


def embed(schema: Any, pointer: str) -> Any:
    """`schema` with every local reference ("#...") rewritten to start at `pointer`
    (e.g. "#/components/schemas/Payload.report"), for placing it there."""
    return _rewrite_refs(schema, "#", pointer)


def extract(schema: Any, pointer: str) -> Any:
    """The inverse of `embed`: a schema taken from `pointer` in a document, standalone."""
    return _rewrite_refs(schema, pointer, "#")


def _rewrite_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        out = {key: _rewrite_refs(value, old, new) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == old or ref.startswith(old.rstrip("/") + "/")):
            out["$ref"] = new + ref[len(old) :]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value, old, new) for value in node]
    return node
