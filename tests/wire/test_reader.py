"""StreamReader's bookkeeping: content frames counted, the last delivered id, `finished`.

What it delivers is checked against every recorded fixture by the test_dialect_*.py modules
(through tests/wire/replay.py); this module pins what the transport reads back from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._events import ServerError, StreamEvent, TextDelta
from aistream._wire._native import NativeDialect
from aistream._wire._ollama import OllamaDialect
from aistream._wire._openai import OpenAIDialect
from aistream._wire._reader import StreamReader
from aistream._wire._sse import encode_sse

from .replay import EVENT, chunked

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_native_ids_are_tracked_on_both_paths_and_the_count_skips_comments() -> None:
    raw = (FIXTURES / "native" / "ours.sse").read_bytes()
    events: list[StreamEvent] = []
    texts: list[str] = []
    reader = StreamReader(NativeDialect(), events.extend, texts.append)
    counts = [reader.feed(chunk) for chunk in chunked(raw, EVENT)]
    assert counts == [1, 1, 0, 1, 1, 1, 1]  # the ": ping" comment is no event
    assert reader.events == 6
    assert reader.last_event_id == "s1:5"
    assert reader.finished


def test_a_resumed_reader_keeps_its_id_until_an_event_carries_one() -> None:
    reader = StreamReader(NativeDialect(), lambda _: None, last_event_id="s1:3")
    reader.feed(encode_sse('{"token":"x"}'))  # an unnamed seed event, no id line
    assert reader.last_event_id == "s1:3"  # SSE's id buffer starts at the resume point


def test_ids_are_not_tracked_for_a_dialect_that_cannot_resume() -> None:
    reader = StreamReader(OpenAIDialect(), lambda _: None)
    data = '{"choices":[{"index":0,"delta":{"content":"hi"}}]}'
    reader.feed(encode_sse(data, id="7"))
    assert (reader.events, reader.last_event_id) == (1, "")


def test_heartbeats_reach_on_heartbeat_and_are_not_counted() -> None:
    beats: list[None] = []
    reader = StreamReader(
        AnthropicDialect(), lambda _: None, on_heartbeat=lambda: beats.append(None)
    )
    assert reader.feed(encode_sse('{"type": "ping"}', event="ping")) == 0
    assert (reader.events, len(beats)) == (0, 1)


def test_a_frame_is_counted_before_its_sink_raises() -> None:
    def sink(events: Sequence[StreamEvent]) -> None:
        if any(isinstance(e, ServerError) for e in events):
            raise RuntimeError("the stream's own error")

    reader = StreamReader(NativeDialect(), sink)
    with pytest.raises(RuntimeError):
        reader.feed(encode_sse('{"error": "boom"}', event="error"))
    assert reader.events == 1  # the retry loop reads it as progress


@pytest.mark.parametrize("size", [None, 1, 7])
def test_ndjson_has_no_ids_and_finishes_at_done(size: int | None) -> None:
    raw = (FIXTURES / "ollama" / "basic.ndjson").read_bytes()
    events: list[StreamEvent] = []
    reader = StreamReader(OllamaDialect(), events.extend, last_event_id="")
    for chunk in chunked(raw, size):
        reader.feed(chunk)
    reader.eof()
    assert reader.finished and reader.last_event_id == ""
    assert "".join(e.text for e in events if isinstance(e, TextDelta))
    assert reader.events == raw.count(b"\n")
