"""The per-token fast path gives exactly what the full path gives.

`SSEDecoder.data_only` + `Dialect.text_of` let the transport turn a chunk that is one plain
``data:`` event into text without frames. These properties pin it to `feed` + `parse`: same
event, same text, same decoder state afterwards, with the stdlib JSON parser and with orjson.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aistream._transport import AttemptState, Transport
from aistream._wire import _json
from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import SSEEvent, StreamEvent, TextDelta, WireError
from aistream._wire._openai import OpenAIDialect
from aistream._wire._sse import SSEDecoder
from tests.helpers import stream_handler
from tests.loopback import openai_events

from .replay import EVENT, chunked, replay_through
from .test_properties import (
    BYTES,
    DIALECTS,
    JSON_VALUES,
    TEXT,
    _mock_client,
    split_at,
    sse_streams,
)

HAS_ORJSON = importlib.util.find_spec("orjson") is not None


json_backend = _json.parser


BACKENDS = [
    "json",
    pytest.param(
        "orjson", marks=pytest.mark.skipif(not HAS_ORJSON, reason="orjson is not installed")
    ),
]


# --- SSEDecoder.data_only ------------------------------------------------------------------------

_DATA_TEXT = st.builds(lambda v: b"data: " + v.encode() + b"\n\n", TEXT)
DATA_CHUNKS = st.one_of(  # mostly the fast path's shape, with CR, LF, NUL and friends inside
    _DATA_TEXT,
    _DATA_TEXT,
    _DATA_TEXT,
    st.builds(lambda v: b"data: " + v + b"\n\n", BYTES),
    BYTES,
)


def _state(decoder: SSEDecoder) -> tuple[Any, ...]:
    """Every field of the decoder, the mutable ones copied."""
    values = (getattr(decoder, name) for name in SSEDecoder.__slots__)
    return tuple(
        bytes(v) if isinstance(v, bytearray) else list(v) if isinstance(v, list) else v
        for v in values
    )


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_data_only_answers_only_what_feed_would_dispatch_and_changes_nothing(
    data: st.DataObject,
) -> None:
    raw, _ = data.draw(sse_streams(), label="prefix")
    cut = data.draw(st.just(len(raw)) | st.integers(0, len(raw)), label="cut")  # or mid-event
    chunk = data.draw(DATA_CHUNKS, label="chunk")
    limit = data.draw(st.sampled_from([16, 64, 1 << 20]), label="limit")
    fast, full = SSEDecoder(max_event_bytes=limit), SSEDecoder(max_event_bytes=limit)
    for decoder in (fast, full):
        with contextlib.suppress(WireError):
            decoder.feed(raw[:cut])
    before = _state(fast)
    value = fast.data_only(chunk)
    assert _state(fast) == before  # a peek: never a change
    if value is None:
        return
    events = full.feed(chunk)
    assert events == [
        SSEEvent(
            value.decode("utf-8", "replace"), "message", fast.last_event_id or None, fast.retry_ms
        )
    ]
    assert _state(full) == before  # feeding it leaves the decoder as it was


def test_data_only_refuses_every_other_shape() -> None:
    decoder = SSEDecoder(max_event_bytes=32)
    decoder.feed(b"\xef\xbb\xbf")  # the BOM is behind us
    assert decoder.data_only(b'data: {"a":1}\n\n') == b'{"a":1}'
    assert decoder.data_only(b"data: \n\n") == b""
    for chunk in (
        b"data:x\n\n",  # no space: left to feed
        b"data: x\n",  # not yet dispatched
        b"data: x\n\ndata: y\n\n",  # two events
        b"data: x\r\n\r\n",
        b"data: a\rb\n\n",
        b"id: 1\ndata: x\n\n",
        b"event: e\ndata: x\n\n",
        b"data: " + b"x" * 40 + b"\n\n",  # over max_event_bytes: feed raises
        b"",
    ):
        assert decoder.data_only(chunk) is None, chunk
    decoder.feed(b"data: pending")
    assert decoder.data_only(b"data: x\n\n") is None


# --- OpenAIDialect.text_of -----------------------------------------------------------------------

CONTENT = st.one_of(st.none(), TEXT, st.integers(), st.lists(JSON_VALUES, max_size=2))
DELTA_EXTRAS = st.dictionaries(
    st.sampled_from(
        [
            "role",
            "refusal",
            "reasoning_content",
            "reasoning",
            "tool_calls",
            "audio",
            "function_call",
        ]
    ),
    st.one_of(st.none(), st.just(""), TEXT, JSON_VALUES),
    max_size=3,
)


@st.composite
def openai_chunks(draw: st.DrawFn) -> Any:
    """Chunk-like objects: mostly plain text deltas, with every field that must send it to the
    full parse (a finish reason, usage, an error, a second choice, tool calls, …) now and then."""
    delta: dict[str, Any] = draw(DELTA_EXTRAS)
    if draw(st.booleans()):
        delta["content"] = draw(CONTENT)
    choice: dict[str, Any] = {"delta": draw(st.one_of(st.just(delta), JSON_VALUES))}
    if draw(st.booleans()):
        choice["index"] = draw(st.sampled_from([0, 1, None, "0"]))
    if draw(st.booleans()):
        choice["finish_reason"] = draw(st.sampled_from([None, "stop", "length", ""]))
    choices = [choice] * draw(st.integers(0, 2))
    obj: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    if draw(st.booleans()):
        obj["choices"] = draw(st.one_of(st.just(choices), JSON_VALUES))
    for key in draw(st.sets(st.sampled_from(["usage", "error", "obfuscation", "x"]), max_size=2)):
        obj[key] = draw(JSON_VALUES)
    return draw(st.one_of(st.just(obj), JSON_VALUES))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=500, deadline=None)
@given(obj=openai_chunks(), ascii_only=st.booleans())
def test_openai_text_of_equals_parse(backend: str, obj: Any, ascii_only: bool) -> None:
    data = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    with json_backend(backend):
        text = OpenAIDialect().text_of(data)
        events = OpenAIDialect().parse(SSEEvent(data.decode("utf-8", "replace")))
    if text is not None:
        assert list(events) == ([TextDelta(text)] if text else [])


@pytest.mark.parametrize("backend", BACKENDS)
@given(raw=BYTES)
def test_openai_text_of_declines_bytes_that_are_not_a_text_chunk(backend: str, raw: bytes) -> None:
    with json_backend(backend):
        text = OpenAIDialect().text_of(raw)
        if text is not None:  # random bytes that happen to be a text chunk: still exact
            events = OpenAIDialect().parse(SSEEvent(raw.decode("utf-8", "replace")))
            assert list(events) == ([TextDelta(text)] if text else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_text_of_reads_the_chunks_servers_send(backend: str) -> None:
    head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    plain = head + '"choices":[{"index":0,"delta":{"content":"Hi é"},"finish_reason":null}]}'
    obfuscated = plain[:-1] + ',"obfuscation":"Xq3"}'
    with_role = head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
    finish = head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    with json_backend(backend):
        dialect = OpenAIDialect()
        assert dialect.text_of(plain.encode()) == "Hi é"
        assert dialect.text_of(obfuscated.encode()) == "Hi é"
        assert dialect.text_of(with_role.encode()) == ""
        assert dialect.text_of(finish.encode()) is None
        assert dialect.text_of(b"[DONE]") is None
        assert dialect.text_of(plain.encode()[:-1] + b"\xff}") is None  # not UTF-8: parse decides


# --- through the transport -----------------------------------------------------------------------


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[list[bytes], str]:
    """An OpenAI stream whose events are sometimes whole chunks, sometimes split or merged."""
    tokens = draw(st.lists(TEXT, max_size=12))
    head = '{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":'
    events = [f"data: {head}{json.dumps(t)}}}}}]}}\n\n".encode() for t in tokens]
    events.append(b"data: [DONE]\n\n")
    chunks: list[bytes] = []
    for event in events:
        how = draw(st.sampled_from(["whole", "split", "merge"]))
        if how == "split":
            chunks += split_at(event, [draw(st.integers(0, len(event)))])
        elif how == "merge" and chunks:
            chunks[-1] += event
        else:
            chunks.append(event)
    return chunks, "".join(tokens)


@settings(max_examples=100, deadline=None)
@given(stream=openai_streams())
def test_transport_gives_the_exact_text_however_events_fall_into_chunks(
    stream: tuple[list[bytes], str],
) -> None:
    chunks, expected = stream

    async def run() -> list[str]:
        dialect = OpenAIDialect()
        request = ChatRequest((ChatMessage("user", "hi"),))
        spec = dialect.build_request("http://test/v1/chat/completions", request)
        transport = Transport(headers={}, timeout=5.0, stall_timeout=None, max_event_bytes=1 << 20)
        texts: list[str] = []  # both sinks write here, in the order the transport calls them

        def sink(events: list[StreamEvent]) -> None:
            texts.extend(e.text for e in events if isinstance(e, TextDelta))

        async with _mock_client(chunks, "text/event-stream") as client:
            await transport.run(client, spec, dialect, sink, AttemptState(), texts.append)
        return texts

    assert "".join(asyncio.run(run())) == expected


# --- recorded streams ---------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDED = [
    (name, path.name)
    for name in DIALECTS
    for path in sorted((FIXTURES / name).iterdir())
    if path.suffix in (".sse", ".ndjson")
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "fixture"), RECORDED)
def test_recorded_streams_give_the_same_events_on_both_paths_and_parsers(
    backend: str, name: str, fixture: str
) -> None:
    raw = (FIXTURES / name / fixture).read_bytes()
    with json_backend("json"):
        whole = replay_through(DIALECTS[name](), [raw])  # no fast path, stdlib JSON
    with json_backend(backend):
        assert replay_through(DIALECTS[name](), chunked(raw, EVENT)) == whole


@pytest.mark.parametrize("backend", BACKENDS)
def test_what_an_accelerator_refuses_is_parsed_by_json_all_the_same(backend: str) -> None:
    chunk = '{"choices":[{"index":0,"delta":{"content":"\\ud83d"},"n":1e999,"big":%s}]}' % (
        "9" * 30
    )
    with json_backend(backend):
        assert OpenAIDialect().text_of(chunk.encode()) in (None, "\ud83d")
        assert OpenAIDialect().parse(SSEEvent(chunk)) == [TextDelta("\ud83d")]


PADDING = st.sampled_from(["", " ", "\n", "\t ", "x", " 1", "}"])


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, before=PADDING, after=PADDING)
def test_the_stdlib_bytes_parser_agrees_with_json_loads(
    value: Any, before: str, after: str
) -> None:
    text = before + json.dumps(value) + after
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            _json._utf8_json(text.encode())
        return
    assert _json._utf8_json(text.encode()) == expected


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_emoji_split_into_utf16_halves_arrives_whole_on_either_path(
    serve: Any, backend: str
) -> None:
    """json.dumps escapes each half on its own (``"\\ud83d"``): a lone surrogate per chunk."""
    from aistream import AIStream

    tokens = ["ok ", "\ud83d", "\ude00", " and ", "\ud83e\udd14", "\udc00", "!"]
    server = await serve(stream_handler(openai_events(tokens)))
    with json_backend(backend):
        async with AIStream(server.url + "/v1/chat/completions", protocol="openai") as chat:
            seen: list[str] = []
            chat.on("token", seen.append)
            reply = await asyncio.wait_for(chat.send("hi"), 10)
            assert reply.content == "ok \U0001f600 and \U0001f914\ufffd!"
            assert "".join(seen) == reply.content  # every token event is well-formed text
            await asyncio.wait_for(chat.send("again"), 10)  # the history goes back as UTF-8
    sent = server.requests[1].json()["messages"]
    assert sent[1]["content"] == "ok \U0001f600 and \U0001f914\ufffd!"
