"""The worker's decoder gives what ``schemas.decode`` gives: the same events and the same DLQ reasons."""

import orjson
import pytest

from tokenpulse.schemas import RequestTiming, SchemaError, decode
from tokenpulse.streams.decoding import TOMBSTONE_ERROR, decode_timing
from tokenpulse.testing.streams import DEFAULT_START_NS, TimingFactory, TimingKey, default_keys, timing_records

S = 1_000_000_000


def test_generated_events_decode_exactly_as_the_reference():
    records = [raw for _, raw in timing_records(TimingFactory(seed=7).stream(default_keys(6), 500, interval_ns=S))]
    decoded = [decode_timing(raw) for raw in records]
    assert decoded == [decode(RequestTiming, raw) for raw in records]
    assert len({event.event_id for event in decoded}) == 500


def _bad_records():
    good = orjson.loads(TimingFactory(seed=3).event(TimingKey("sim", "m"), DEFAULT_START_NS).model_dump_json())
    without_version = {k: v for k, v in good.items() if k != "schema_version"}
    return [
        b"{not json",
        b"",
        orjson.dumps([1]),
        orjson.dumps("text"),
        orjson.dumps(dict(good, schema_version=99)),
        orjson.dumps(dict(good, schema_version="1")),
        orjson.dumps(without_version),
        orjson.dumps(dict(good, e2e_ms=-1.0)),
        orjson.dumps(dict(good, ttft_ms=good["e2e_ms"] + 1.0)),
        orjson.dumps({k: v for k, v in good.items() if k != "provider"}),
        orjson.dumps(dict(good, endpoint="https://user:secret@api.example.com/v1")),
        orjson.dumps(dict(good, started_at="2026-11-21T10:00:00")),
        orjson.dumps(dict(good, started_at="2026-11-21T25:00:00.000000000Z")),
        orjson.dumps(dict(good, status="error", error_kind=None)),
        orjson.dumps(dict(good, extra_field=1)),
        orjson.dumps(dict(good, provider="")),
    ]


@pytest.mark.parametrize("raw", _bad_records())
def test_invalid_records_get_the_reference_reason(raw):
    with pytest.raises(SchemaError) as reference:
        decode(RequestTiming, raw)
    with pytest.raises(SchemaError) as fast:
        decode_timing(raw)
    assert str(fast.value) == str(reference.value)
    assert "secret" not in str(fast.value)


def test_a_tombstone_is_a_schema_error_naming_it():
    with pytest.raises(SchemaError, match="tombstone"):
        decode_timing(None)
    assert "RequestTiming" in TOMBSTONE_ERROR
