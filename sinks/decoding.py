"""A faster decoder for the sinks' hot path, with the semantics of ``schemas.decode``.

``schemas.decode`` parses with orjson and then validates the dict; per record that costs about twice what
pydantic's own JSON validation does, and most of what is left is two pure Python validators of the events:
the RFC 3339 timestamp parser and the endpoint URL check. ``FastDecoder`` compiles a validator from the
model's own core schema with exactly those two functions replaced by equivalents:

* timestamps in the canonical form that ``schemas.encode`` writes (``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``) are
  read by slicing, with the day looked up in a small memo filled by the reference parser; any other input
  goes to the reference parser itself;
* the endpoint check (a pure function of one string) is memoised, since a deployment has few endpoints.

Everything else (types, bounds, strictness, model validators) is the model's own. A record the fast path
rejects, or one that leaves ``schema_version`` out, is re-decoded by ``schemas.decode`` so that the
``SchemaError`` and its message are exactly the reference ones. Property tests hold the two decoders
together; if the models change so that a substitution no longer applies, the decoder stays correct and
only ``substitutions`` (which a unit test checks) shrinks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel
from pydantic_core import SchemaValidator

from schemas import SchemaError, decode
from schemas.timestamps import parse_rfc3339_ns

EventT = TypeVar("EventT", bound=BaseModel)

_NS_PER_S = 1_000_000_000
_MEMO_SIZE = 4096


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _day_ns(day: str) -> int:
    return parse_rfc3339_ns(day + "T00:00:00Z")


def canonical_timestamp_ns(text: str) -> int | None:
    """Epoch ns of ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (what ``schemas.encode`` writes), ``None`` for any
    other text; equal to ``schemas.parse_rfc3339_ns`` wherever it is not ``None``."""
    if (
        len(text) != 30
        or text[29] != "Z"
        or text[10] != "T"
        or text[13] != ":"
        or text[16] != ":"
        or text[19] != "."
        or not text.isascii()
    ):
        return None
    clock, fraction = text[11:13] + text[14:16] + text[17:19], text[20:29]
    if not (clock.isdigit() and fraction.isdigit()):
        return None
    hour, minute, second = int(clock[0:2]), int(clock[2:4]), int(clock[4:6])
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        day_ns = _day_ns(text[:10])
    except ValueError:
        return None
    return day_ns + (hour * 3600 + minute * 60 + second) * _NS_PER_S + int(fraction)


def _fast_coerce(reference: Callable[[Any], int]) -> Callable[[Any], int]:
    def coerce_ns(value: Any) -> int:
        if type(value) is str:
            found = canonical_timestamp_ns(value)
            if found is not None:
                return found
        return reference(value)

    return coerce_ns


def _is_timestamp_coercer(function: Any) -> bool:
    return getattr(function, "__module__", None) == "schemas.timestamps" and function.__name__ == "_coerce_ns"


def _is_endpoint_check(function: Any) -> bool:
    return getattr(function, "__name__", None) == "_endpoint_has_no_credentials"


class FastDecoder(Generic[EventT]):
    """``decode(raw) -> model`` with ``schemas.decode``'s results and errors; see the module docstring."""

    def __init__(self, model: type[EventT]) -> None:
        self.model = model
        self.substitutions: set[str] = set()
        schema = self._rewrite(model.__pydantic_core_schema__)
        self._validate_json = SchemaValidator(cast(Any, schema)).validate_json

    def __repr__(self) -> str:
        return f"FastDecoder({self.model.__name__}, substitutions={sorted(self.substitutions)})"

    def _rewrite(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self._rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        rewritten = {key: self._rewrite(value) for key, value in node.items()}
        function = node.get("function")
        if isinstance(function, dict) and function.get("type") == "no-info":
            if _is_timestamp_coercer(function["function"]):
                rewritten["function"] = {"type": "no-info", "function": _fast_coerce(function["function"])}
                self.substitutions.add("timestamp")
            elif _is_endpoint_check(function["function"]):
                memo = functools.lru_cache(maxsize=_MEMO_SIZE)(function["function"])
                rewritten["function"] = {"type": "no-info", "function": memo}
                self.substitutions.add("endpoint")
        return rewritten

    def decode(self, raw: bytes | None) -> EventT:
        """Validate ``raw`` as the model; raise ``SchemaError`` (the reference decoder's) if it is not one."""
        if raw is None:
            raise SchemaError("record has no value (tombstone)")
        try:
            event = cast(EventT, self._validate_json(raw))
        except ValueError:  # pydantic_core.ValidationError is one
            return decode(self.model, raw)
        if "schema_version" not in event.model_fields_set:
            return decode(self.model, raw)  # the reference decoder rejects a missing version
        return event
