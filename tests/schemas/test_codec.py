"""``schemas.decode``'s one-pass path gives what its step-by-step path gives: the same events, the same
errors; the canonical-timestamp fast path agrees with the general RFC 3339 parser."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpulse.schemas import Alert, RequestTiming, SchemaError, WindowStats, decode, encode, format_rfc3339_ns
from tokenpulse.schemas.codec import _decode_explained
from tokenpulse.schemas.timestamps import _canonical_ns as canonical_timestamp_ns
from tokenpulse.schemas.timestamps import _parse_general as general_parse
from tokenpulse.testing.sinks import make_alert, make_timing, make_window


def explained(raw: bytes | None) -> RequestTiming:
    assert raw is not None
    return _decode_explained(RequestTiming, raw)


@pytest.mark.parametrize("event", [make_timing(), make_window(), make_alert()])
def test_round_trip_equals_reference(event: RequestTiming | WindowStats | Alert) -> None:
    raw = encode(event)
    assert decode(type(event), raw) == _decode_explained(type(event), raw) == event


def _mutated(**changes: object) -> bytes:
    document = orjson.loads(encode(make_timing()))
    for key, value in changes.items():
        if value is ...:
            del document[key]
        else:
            document[key] = value
    return orjson.dumps(document)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        _mutated(schema_version=...),  # the reference requires the version to be present
        _mutated(schema_version=2),
        _mutated(endpoint="http://user:pw@host/v1"),
        _mutated(endpoint="http://user:pw@host/v1"),  # a second time: the endpoint memo must not hide it
        _mutated(started_at="2026-05-28T20:26:40.000000000"),  # no zone
        _mutated(started_at="2026-02-30T20:26:40.000000000Z"),
        _mutated(started_at="2026-05-28T24:00:00.000000000Z"),
        _mutated(ttft_ms=5000.0),  # beyond e2e_ms
        _mutated(status="error"),  # without an error_kind
        _mutated(unknown_field=1),
    ],
)
def test_invalid_records_raise_the_reference_error(raw: bytes) -> None:
    with pytest.raises(SchemaError) as reference:
        explained(raw)
    with pytest.raises(SchemaError) as fast:
        decode(RequestTiming, raw)
    assert str(fast.value) == str(reference.value)
    assert "pw@" not in str(fast.value)


def test_tombstone_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="tombstone"):
        decode(RequestTiming, None)


@given(st.integers(min_value=0, max_value=253402300799 * 10**9 + 999_999_999))
def test_canonical_timestamps_match_the_reference_parser(ns: int) -> None:
    text = format_rfc3339_ns(ns)
    assert canonical_timestamp_ns(text) == general_parse(text) == ns


_near_canonical = st.builds(
    lambda base, i, ch: base[:i] + ch + base[i + 1 :],
    st.sampled_from(["2026-05-28T20:26:40.123456789Z", "1999-12-31T23:59:59.999999999Z"]),
    st.integers(min_value=0, max_value=29),
    st.sampled_from(list("0123456789:-.TZz +٣_")),
)


@settings(max_examples=500)
@given(_near_canonical)
def test_near_canonical_text_is_parsed_as_the_reference_does_or_left_to_it(text: str) -> None:
    fast = canonical_timestamp_ns(text)
    try:
        reference: int | None = general_parse(text)
    except ValueError:
        reference = None
    if fast is not None:
        assert fast == reference
    raw = _mutated(started_at=text)
    if reference is None:
        with pytest.raises(SchemaError):
            decode(RequestTiming, raw)
    else:
        assert decode(RequestTiming, raw).started_at == reference


@given(
    ttft=st.one_of(st.none(), st.floats(0, 1e4)),
    provider=st.text(st.characters(codec="ascii"), min_size=1, max_size=20),
    region=st.one_of(st.none(), st.text(max_size=10)),
    tags=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_random_valid_timings_decode_like_the_reference(
    ttft: float | None, provider: str, region: str | None, tags: dict[str, str]
) -> None:
    try:
        event = make_timing(ttft_ms=ttft, provider=provider, region=region, tags=tags)
    except ValueError:
        return  # not a valid event to begin with (e.g. a blank provider)
    raw = encode(event)
    assert decode(RequestTiming, raw) == explained(raw)
