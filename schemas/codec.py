"""The one pair of JSON encode/decode helpers that every producer and consumer uses."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from tokenpulse.schemas.events import SCHEMA_VERSION

EventT = TypeVar("EventT", bound=BaseModel)


class SchemaError(ValueError):
    """Bytes that are not a valid event; the message says why, in one line, for a dead-letter header."""


def encode(event: BaseModel) -> bytes:
    """Compact JSON bytes of an event (timestamps as RFC 3339 UTC with nanoseconds)."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=False)


def decode(model: type[EventT], raw: bytes | str | None) -> EventT:
    """Parse and validate ``raw`` as ``model``; raise ``SchemaError`` naming the problem.

    Valid events take pydantic-core's one-pass JSON validation; anything it rejects, or an event that
    leaves ``schema_version`` out, goes through the step-by-step path below, which names the problem.
    """
    if raw is None:
        raise SchemaError(f"record has no value (tombstone) where a {model.__name__} was expected")
    try:
        event = model.model_validate_json(raw)
    except ValueError:  # pydantic_core.ValidationError is one
        return _decode_explained(model, raw)
    if "schema_version" not in event.model_fields_set:
        return _decode_explained(model, raw)
    return event


def _decode_explained(model: type[EventT], raw: bytes | str) -> EventT:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SchemaError(f"expected a JSON object, got {type(document).__name__}")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"unknown schema_version {version!r} (this build reads {SCHEMA_VERSION})")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SchemaError(_summarise(exc)) from None


def _summarise(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "event"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")
