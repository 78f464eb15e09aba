"""Properties of the sans-I/O decoders, for any input hypothesis can think of.

- Any chunking of any valid stream gives the same events, and the events the stream encodes
  (SSE and NDJSON, and each dialect on top of them).
- Random bytes never raise anything but WireError from a decoder (ProtocolError once the
  transport maps it); a dialect never raises at all; the transport raises only AIStreamErrors.
- `encode_sse` and `SSEDecoder` round-trip arbitrary text (newlines, CR, NUL, any surrogate-free
  Unicode, 1 MiB payloads); SSE itself turns CR and CRLF into LF, so the native protocol, which
  puts text in JSON, round-trips it exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aistream import AIStream, AIStreamError, ConnectionLostError, ProtocolError, RetryConfig
from aistream._transport import AttemptState, Transport
from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._dialect import ChatMessage, ChatRequest, Dialect
from aistream._wire._events import (
    NDJSONLine,
    SSEEvent,
    StreamEvent,
    TextDelta,
    WireError,
)
from aistream._wire._native import NativeDialect
from aistream._wire._ndjson import NDJSONDecoder
from aistream._wire._ollama import OllamaDialect
from aistream._wire._openai import OpenAIDialect
from aistream._wire._sse import SSEDecoder, encode_sse
from aistream.server._encoders import NativeEncoder

MiB = 1 << 20
DIALECTS: dict[str, Callable[[], Dialect]] = {
    "native": NativeDialect,
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
    "ollama": OllamaDialect,
}

# Surrogate-free Unicode, with the characters that break line-based decoders made common.
AWKWARD = "\r\n\x00\u2028\u2029\x85\ufeff:\t é😀"
CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(AWKWARD))
TEXT = st.text(CHARS, max_size=40)
TOKEN = st.text(CHARS, min_size=1, max_size=20)
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
ID = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
EOLS = st.sampled_from([b"\n", b"\r\n", b"\r"])


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(raw), *cuts})
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def chunkings(raw: bytes) -> st.SearchStrategy[list[bytes]]:
    """`raw` cut at any points: single bytes, mid-character, mid-CRLF, or not at all."""
    return st.lists(st.integers(0, len(raw)), max_size=30).map(lambda cuts: split_at(raw, cuts))


def sse_decode(chunks: list[bytes], max_event_bytes: int = MiB) -> list[SSEEvent]:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.eof()


def ndjson_decode(chunks: list[bytes]) -> list[NDJSONLine]:
    decoder = NDJSONDecoder()
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.eof()


# --- any chunking of a valid stream ---------------------------------------------------------------


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A valid event stream (any line ending, comments, retry, BOM) and the events it encodes."""
    blocks: list[bytes] = []
    expected: list[SSEEvent] = []
    last_id = ""
    retry: int | None = None
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            blocks.append(encode_sse(comment=draw(TEXT)))
        event = draw(st.none() | NAME)
        event_id = draw(st.none() | ID)
        new_retry = draw(st.none() | st.integers(0, 10**6))
        data = draw(st.none() | TEXT)
        blocks.append(encode_sse(data, event=event, id=event_id, retry=new_retry))
        if event_id is not None:
            last_id = event_id
        if new_retry is not None:
            retry = new_retry
        if data is not None:
            text = data.replace("\r\n", "\n").replace("\r", "\n")
            expected.append(SSEEvent(text, event or "message", last_id or None, retry))
    eol = draw(EOLS)
    raw = b"".join(blocks).replace(b"\n", eol)  # encode_sse writes LF only; SSE allows all three
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw, expected


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_sse_any_chunking_of_a_valid_stream_gives_its_events(data: st.DataObject) -> None:
    raw, expected = data.draw(sse_streams(), label="stream")
    assert sse_decode([raw]) == expected
    chunks = data.draw(chunkings(raw), label="chunks")
    assert sse_decode(chunks) == expected


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ndjson_any_chunking_of_a_valid_stream_gives_its_lines(data: st.DataObject) -> None:
    values = data.draw(st.lists(JSON_VALUES, max_size=8), label="values")
    ascii_only = data.draw(st.booleans())
    lines = [json.dumps(v, ensure_ascii=ascii_only).encode() for v in values]
    eol = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(line + eol + data.draw(st.sampled_from([b"", eol, b" \n"])) for line in lines)
    unterminated: bool = data.draw(st.booleans())
    if lines and unterminated:
        body = body.rstrip(b"\r\n ")  # no final newline: eof() returns the last line
    chunks = data.draw(chunkings(body), label="chunks")
    decoded = ndjson_decode(chunks)
    assert decoded == ndjson_decode([body])
    assert [json.loads(line.text) for line in decoded] == values


def native_stream(tokens: list[str]) -> bytes:
    encoder = NativeEncoder("s1", "m")
    frames = [encoder.start(), *(encoder.token(t) for t in tokens)]
    return b"".join([*frames, encoder.done()])


def openai_stream(tokens: list[str]) -> bytes:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": t}}]} for t in tokens
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    body = b"".join(encode_sse(json.dumps(c, ensure_ascii=False)) for c in chunks)
    return body + encode_sse("[DONE]")


def anthropic_stream(tokens: list[str]) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in tokens
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    return b"".join(encode_sse(json.dumps(e), event=e["type"]) for e in events)


def ollama_stream(tokens: list[str]) -> bytes:
    lines = [{"message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    lines.append({"done": True, "prompt_eval_count": 3, "eval_count": 4, "done_reason": "stop"})
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


STREAMS: dict[str, Callable[[list[str]], bytes]] = {
    "native": native_stream,
    "openai": openai_stream,
    "anthropic": anthropic_stream,
    "ollama": ollama_stream,
}


def dialect_events(name: str, chunks: list[bytes]) -> list[StreamEvent]:
    dialect = DIALECTS[name]()
    decoder: SSEDecoder | NDJSONDecoder = (
        SSEDecoder() if dialect.framing == "sse" else NDJSONDecoder()
    )
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)] + decoder.eof()
    events = [event for frame in frames for event in dialect.parse(frame)]
    assert dialect.finished
    return events


@pytest.mark.parametrize("name", list(DIALECTS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_dialect_any_chunking_gives_the_same_events_and_exact_text(
    name: str, data: st.DataObject
) -> None:
    tokens = data.draw(st.lists(TOKEN, max_size=10), label="tokens")
    raw = STREAMS[name](tokens)
    whole = dialect_events(name, [raw])
    assert [e.text for e in whole if isinstance(e, TextDelta)] == tokens
    chunks = data.draw(chunkings(raw), label="chunks")
    assert dialect_events(name, chunks) == whole


# --- random bytes -------------------------------------------------------------------------------

PIECES = [
    *(b"data:", b"data: ", b"event: ", b"id: ", b"retry: 9", b":", b"\r", b"\n", b"\r\n"),
    *(b"{", b"}", b'"', b"[DONE]", b"\xef\xbb\xbf", b"\xff", "😀".encode()[:3], b"\x00"),
    *(b'{"token":"x","index":0}', b'{"done":true}', b'{"error":"x"}', b'{"type":"ping"}'),
]
BYTES = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.sampled_from(PIECES),
        max_size=60,
    ).map(b"".join),
)


@settings(max_examples=500, deadline=None)
@given(raw=BYTES, cuts=st.lists(st.integers(0, 600), max_size=20), limit=st.integers(1, 256))
def test_random_bytes_raise_nothing_but_wire_error_and_it_sticks(
    raw: bytes, cuts: list[int], limit: int
) -> None:
    for decoder in (SSEDecoder(max_event_bytes=limit), NDJSONDecoder(max_line_bytes=limit)):
        failed = False
        for chunk in split_at(raw, [c for c in cuts if c <= len(raw)]):
            try:
                decoder.feed(chunk)
            except WireError:
                failed = True
            else:
                assert not failed, "a decoder that failed must keep failing"
        if failed:
            with pytest.raises(WireError):
                decoder.eof()
        else:
            decoder.eof()


@settings(max_examples=300, deadline=None)
@given(raw=BYTES, cuts=st.lists(st.integers(0, 600), max_size=20))
def test_random_bytes_through_every_dialect_never_raise(raw: bytes, cuts: list[int]) -> None:
    chunks = split_at(raw, [c for c in cuts if c <= len(raw)])
    for factory in DIALECTS.values():
        dialect = factory()
        decoder: SSEDecoder | NDJSONDecoder = (
            SSEDecoder() if dialect.framing == "sse" else NDJSONDecoder()
        )
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                dialect.parse(frame)
        for frame in decoder.eof():
            dialect.parse(frame)


FRAMES = st.one_of(
    st.builds(SSEEvent, st.one_of(TEXT, JSON_VALUES.map(json.dumps)), NAME, st.none() | ID),
    st.builds(NDJSONLine, st.one_of(TEXT, JSON_VALUES.map(json.dumps))),
)
EVENT_NAMES = st.sampled_from(
    [
        *("token", "message", "start", "usage", "done", "error", "metadata", "tool-call"),
        *("reasoning", "message_start", "content_block_delta", "message_delta", "ping"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.one_of(
            FRAMES,
            st.builds(
                SSEEvent,
                st.dictionaries(TEXT, JSON_VALUES, max_size=5).map(json.dumps),
                EVENT_NAMES,
            ),
        ),
        max_size=12,
    )
)
def test_any_frames_through_every_dialect_never_raise(frames: list[SSEEvent | NDJSONLine]) -> None:
    for factory in DIALECTS.values():
        dialect = factory()
        for frame in frames:
            dialect.parse(frame)


async def _body(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _mock_client(chunks: list[bytes], content_type: str) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=_body(chunks))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def _transport_run(name: str, chunks: list[bytes], limit: int) -> list[StreamEvent]:
    dialect = DIALECTS[name]()
    ctype = "text/event-stream" if dialect.framing == "sse" else "application/x-ndjson"
    spec = dialect.build_request("http://test/api/chat", ChatRequest((ChatMessage("user", "hi"),)))
    transport = Transport(headers={}, timeout=5.0, stall_timeout=None, max_event_bytes=limit)
    events: list[StreamEvent] = []
    async with _mock_client(chunks, ctype) as client:
        await transport.run(client, spec, dialect, events.extend, AttemptState())
    return events


END_MARKERS = {
    "native": b"\n\nevent: done\ndata: {}\n\n",
    "openai": b"\n\ndata: [DONE]\n\n",
    "anthropic": b'\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n',
    "ollama": b'\n{"done":true}\n',
}


@pytest.mark.parametrize("name", list(DIALECTS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=BYTES, cuts=st.lists(st.integers(0, 600), max_size=10), limit=st.integers(8, 4096))
def test_random_bytes_through_the_transport_raise_only_protocol_or_drop_errors(
    name: str, raw: bytes, cuts: list[int], limit: int
) -> None:
    chunks = split_at(raw, [c for c in cuts if c <= len(raw)])
    try:
        asyncio.run(_transport_run(name, chunks, limit))
    except (ProtocolError, ConnectionLostError):
        pass  # ConnectionLostError: no end marker, which is how a cut stream looks
    try:
        asyncio.run(_transport_run(name, [*chunks, END_MARKERS[name]], limit))
    except ProtocolError:
        pass  # the only way random bytes followed by a proper end may fail


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=BYTES, name=st.sampled_from(list(DIALECTS)))
def test_random_bytes_make_send_raise_only_aistream_errors(raw: bytes, name: str) -> None:
    async def turn() -> None:
        ctype = "application/x-ndjson" if name == "ollama" else "text/event-stream"
        async with _mock_client([raw], ctype) as client:
            chat = AIStream(
                "http://test/api/chat",
                protocol=name,  # type: ignore[arg-type]
                client=client,
                retry=RetryConfig(max_retries=0),
            )
            await chat.send("hi")

    try:
        asyncio.run(turn())
    except AIStreamError:
        pass


# --- round trips ----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(data=st.text(CHARS, max_size=200), event=NAME, event_id=ID)
def test_encode_sse_round_trips_any_text_with_line_breaks_as_lf(
    data: str, event: str, event_id: str
) -> None:
    raw = encode_sse(data, event=event, id=event_id)
    expected = SSEEvent(
        data.replace("\r\n", "\n").replace("\r", "\n"), event or "message", event_id or None
    )
    assert sse_decode([raw]) == [expected]
    assert sse_decode([raw[i : i + 1] for i in range(len(raw))]) == [expected]


@settings(max_examples=400, deadline=None)
@given(data=st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=200))
def test_encode_sse_round_trips_text_without_cr_exactly(data: str) -> None:
    assert sse_decode([encode_sse(data)]) == [SSEEvent(data)]


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(TOKEN, min_size=1, max_size=8))
def test_native_tokens_round_trip_exactly_cr_and_nul_included(tokens: list[str]) -> None:
    events = dialect_events("native", [native_stream(tokens)])
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas == [TextDelta(t, i) for i, t in enumerate(tokens)]


def mebibyte_of(unit: str) -> str:
    """`unit` repeated to at least 1 MiB of UTF-8."""
    return unit * -(-MiB // len(unit.encode()))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=st.text(CHARS, min_size=1, max_size=16), chunk=st.integers(1000, 70000))
def test_encode_sse_round_trips_a_mebibyte_payload(unit: str, chunk: int) -> None:
    data = mebibyte_of(unit)
    raw = encode_sse(data, event="token", id="s1:1")
    expected = [SSEEvent(data.replace("\r\n", "\n").replace("\r", "\n"), "token", "s1:1")]
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    assert sse_decode(chunks, max_event_bytes=4 * MiB) == expected


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=st.text(CHARS, min_size=1, max_size=16))
def test_native_token_of_a_mebibyte_round_trips_exactly(unit: str) -> None:
    token = mebibyte_of(unit)
    raw = native_stream([token])
    decoder = SSEDecoder(max_event_bytes=len(raw))
    frames = decoder.feed(raw) + decoder.eof()
    dialect = NativeDialect()
    deltas = [e for f in frames for e in dialect.parse(f) if isinstance(e, TextDelta)]
    assert deltas == [TextDelta(token, 0)]


def test_max_event_bytes_bounds_data_lines_with_their_field_name_and_line_end() -> None:
    """1 MiB (the default) is the bytes of the event's data lines, "data: " and LF included."""
    fits = "x" * (MiB - len("data: \n"))
    assert sse_decode([encode_sse(fits)]) == [SSEEvent(fits)]
    with pytest.raises(WireError):
        sse_decode([encode_sse(fits + "x")])
    raw = encode_sse(fits)
    assert sse_decode([raw[i : i + 4096] for i in range(0, len(raw), 4096)]) == [SSEEvent(fits)]
