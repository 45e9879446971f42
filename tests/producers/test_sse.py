"""The SSE parser against the event-stream rules of the HTML specification, chunked at every byte."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from tokenpulse.producers.sse import SSEEvent, SSEParser

STREAM = ": keep-alive\r\ndata: one\r\n\r\nevent: note\ndata: two\ndata: lines\n\nid: 7\rdata:three\r\rdata\n\n"
EXPECTED = [
    SSEEvent("one"),
    SSEEvent("two\nlines", event="note"),
    SSEEvent("three", id="7"),
]


def parse(chunks: list[str]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.close()


def test_whole_stream() -> None:
    assert parse([STREAM]) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert parse([STREAM[a:b] for a, b in pairwise(bounds)]) == EXPECTED


def test_an_event_no_empty_line_ended_is_not_dispatched() -> None:
    assert parse(["data: [DONE]"]) == []
    assert parse(["data: a\n\ndata: b\n"]) == [SSEEvent("a")]


def test_a_cr_at_a_chunk_end_pairs_with_the_next_lf() -> None:
    assert parse(["data: a\r", "\n\r", "\n"]) == [SSEEvent("a")]
