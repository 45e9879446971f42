"""Server-side timings (llama.cpp's ``timings``) from the event through the windows to InfluxDB lines."""

from __future__ import annotations

from tokenpulse.schemas import RequestTiming, WindowStats, decode, encode
from tokenpulse.sinks.lineprotocol import request_line, request_line_generic, window_line
from tokenpulse.streams.aggregate import PaneAccumulator, StatsKey, window_stats
from tokenpulse.testing.sinks import BASE_NS, make_timing


def test_events_without_server_timings_still_decode() -> None:
    event = make_timing()
    raw = encode(event).replace(b',"server_prefill_ms":null,"server_decode_ms":null', b"")
    raw = raw.replace(b',"server_cached_tokens":null,"stale_connection_retry":false', b"")
    raw = raw.replace(b',"cached_prompt_tokens":0', b"")
    assert b"server_" not in raw and b"stale_connection" not in raw and b"cached_prompt" not in raw
    old = decode(RequestTiming, raw)
    assert old.server_prefill_ms is None and old.stale_connection_retry is False and old.cached_prompt_tokens == 0


def test_server_timings_reach_the_request_line() -> None:
    event = make_timing(server_prefill_ms=18.5, server_decode_ms=310.25, server_cached_tokens=25)
    line = request_line(event)
    assert line == request_line_generic(event)
    fields = line.split(" ")[1].split(",")
    assert {"server_prefill_ms=18.5", "server_decode_ms=310.25", "server_cached_tokens=25i"} <= set(fields)
    assert "server_" not in request_line(make_timing())


def test_windows_carry_the_p95_of_server_timings_and_old_pane_state_loads() -> None:
    pane = PaneAccumulator()
    for n in range(1, 101):
        pane.add(make_timing(server_prefill_ms=float(n), server_decode_ms=10.0 * n, server_cached_tokens=n))
    pane.add(make_timing())  # a server without timings
    key = StatsKey("simulated", "sim-small", "chat", "local")
    stats = window_stats(key, "1m", BASE_NS, BASE_NS + 60 * 10**9, [pane])
    assert stats.server_prefill_ms_p95 is not None and abs(stats.server_prefill_ms_p95 - 95) <= 2
    assert stats.server_decode_ms_p95 is not None and abs(stats.server_decode_ms_p95 - 950) <= 20
    assert stats.server_cached_tokens_p95 is not None and abs(stats.server_cached_tokens_p95 - 95) <= 2
    assert decode(WindowStats, encode(stats)) == stats
    fields = window_line(stats).split(" ")[1]
    assert "server_prefill_p95_ms=" in fields and "server_decode_p95_ms=" in fields

    state = pane.to_state()
    for name in ("server_prefill_ms", "server_decode_ms", "server_cached_tokens"):
        del state[name]
    restored = PaneAccumulator.from_state(state)
    assert restored.server_prefill_ms.quantile(0.95) is None and restored.count == 101
