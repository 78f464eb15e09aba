"""Our HTTP/1.1 connection (src/aistream/_connection.py) and its framing (_wire/_http1.py).

Every AIStream without ``client=`` streams through them, so the rest of the suite (drops,
stalls, resumes, TLS, the chaos campaign) covers the common paths end to end. These pin the
framing rules byte by byte, and what only this layer does: pushing body pieces to the reader
in the task's context, and refusing what a hostile or broken server sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aistream import AIStream, ConnectionLostError, ProtocolError, RetryConfig, StreamTimeoutError
from aistream._connection import BODY_EXTENSION
from aistream._connection import wait_on as wait_for_bytes
from aistream._pool import UNLIMITED, new_client
from aistream._wire._http1 import MAX_HEAD, Body, FramingError, RequestError, parse_head
from aistream._wire._http1 import Request as Outgoing
from tests.loopback import LoopbackServer, Reply, Request, openai_events

TOKENS = ["One", " two", " three"]
NO_RETRY = RetryConfig(max_retries=0)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


def feed_all(body: Body, data: bytes, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), step):
        out += b"".join(body.feed(data[i : i + step]))
    return out


# --- the framing, sans I/O ----------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_a_chunked_body_reads_the_same_however_the_bytes_arrive(step: int) -> None:
    parts = [b"data: one\n\n", b"x" * 300, b"data: \xe2\x82\xac\n\n"]
    wire = chunked(*parts, trailer=b"X-Trailer: yes\r\n")
    body = Body(chunked=True, length=None)
    assert feed_all(body, wire, step) == b"".join(parts)
    assert body.done and not body.excess


def test_chunk_extensions_are_ignored_and_upper_case_hex_read() -> None:
    body = Body(chunked=True, length=None)
    data = b"A;name=value\r\n0123456789\r\n0\r\n\r\n"
    assert b"".join(body.feed(data)) == b"0123456789"
    assert body.done


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"0x5\r\nhello\r\n", id="0x-prefix"),
        pytest.param(b"-5\r\nhello\r\n", id="negative"),
        pytest.param(b"1_0\r\n", id="underscore"),
        pytest.param(b"zz\r\n", id="not-hex"),
        pytest.param(b" 5\r\nhello\r\n", id="leading-space"),
        pytest.param(b"1" * 16 + b"\r\n", id="too-big"),
        pytest.param(b"5\r\nhelloXY", id="no-crlf-after-data"),
        pytest.param(b"5" + b";" * 5000, id="endless-size-line"),
    ],
)
def test_a_malformed_chunk_is_refused(wire: bytes) -> None:
    with pytest.raises(FramingError):
        Body(chunked=True, length=None).feed(wire)


def test_bytes_after_the_last_chunk_mark_the_connection_unusable() -> None:
    body = Body(chunked=True, length=None)
    assert body.feed(chunked(b"hi") + b"HTTP/1.1 200 OK\r\n") == [b"hi"]
    assert body.done and body.excess


def test_bytes_after_an_empty_body_are_excess() -> None:
    body = Body(chunked=False, length=0)
    assert body.done and body.feed(b"") == [] and not body.excess
    assert body.feed(b"HTTP/1.1") == [] and body.excess
    body.eof()  # a finished body: the connection closing after it is fine
    assert body.done


def test_a_cut_chunked_body_says_so_at_eof() -> None:
    body = Body(chunked=True, length=None)
    body.feed(b"5\r\nhel")
    with pytest.raises(FramingError, match="incomplete chunked read"):
        body.eof()


def test_content_length_bodies() -> None:
    body = Body(chunked=False, length=5)
    assert body.feed(b"hel") == [b"hel"] and not body.done
    assert body.feed(b"loEXTRA") == [b"lo"] and body.done and body.excess
    short = Body(chunked=False, length=5)
    short.feed(b"he")
    with pytest.raises(FramingError, match="3 bytes missing"):
        short.eof()


def test_a_body_until_close_ends_cleanly_at_eof() -> None:
    body = Body(chunked=False, length=None)
    assert body.feed(b"data: x\n\n") == [b"data: x\n\n"]
    body.eof()
    assert body.done


def head_of(raw: bytes) -> Any:
    parsed = parse_head(raw)
    assert parsed is not None
    return parsed[0]


@pytest.mark.parametrize(
    ("raw", "method", "kind"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"POST", "chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"POST", "chunked"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", b"POST", "close"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, \r\n\r\n", b"POST", "chunked"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: ,chunked\r\n\r\n", b"POST", "chunked"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", b"POST", "length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", b"POST", "length"),
        (b"HTTP/1.1 200 OK\r\n\r\n", b"POST", "close"),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", b"DELETE", "empty"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", b"HEAD", "empty"),
    ],
)
def test_the_framing_a_head_announces(raw: bytes, method: bytes, kind: str) -> None:
    body = Body.of(head_of(raw), method)
    if kind == "chunked":
        assert not body.until_close and body.feed(b"0\r\n\r\n") == [] and body.done
    elif kind == "length":
        assert not body.until_close and body.feed(b"7 bytes") == [b"7 bytes"] and body.done
    elif kind == "close":
        assert body.until_close and not body.done
    else:
        assert body.done


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", id="2cl"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", id="negative-cl"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n", id="hex-cl"),
    ],
)
def test_a_bad_content_length_is_refused(raw: bytes) -> None:
    with pytest.raises(FramingError):
        Body.of(head_of(raw), b"POST")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HTTP/2 200\r\n\r\n", id="not-http1"),
        pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", id="short-status"),
        pytest.param(b"HTTP/1.1 099 Hm\r\n\r\n", id="status-below-100"),
        pytest.param(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", id="no-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx a: 1\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-a: a\nb\r\n\r\n", id="bare-lf-in-value"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\n\r\n", id="nul-in-value"),
    ],
)
def test_a_malformed_head_is_refused(raw: bytes) -> None:
    with pytest.raises(FramingError):
        parse_head(raw)


@pytest.mark.parametrize(("version", "kept"), [(b"1.0", False), (b"1.1", True), (b"1.2", True)])
def test_a_later_minor_version_reads_as_http11(version: bytes, kept: bool) -> None:
    head = head_of(b"HTTP/" + version + b" 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert (head.status, head.keep_alive, head.http10) == (200, kept, not kept)


def test_a_head_arrives_in_pieces_and_is_bounded() -> None:
    raw = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nX-Long:  v \r\n\r\nbody"
    assert parse_head(raw[:20]) is None
    head, used = parse_head(raw) or (None, 0)
    assert head is not None and raw[used:] == b"body"
    assert head.status == 200 and head.http10 and not head.keep_alive
    assert (b"X-Long", b"v") in head.headers
    assert not head_of(b"HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n").keep_alive
    with pytest.raises(FramingError, match="longer than"):
        parse_head(b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * (MAX_HEAD // 8))


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Random parts in random chunked framing: hex case, extensions, trailers."""
    parts = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
    wire = b""
    for part in parts:
        size = b"%x" % len(part)
        if draw(st.booleans()):
            size = size.upper()
        ext = draw(st.sampled_from([b"", b";a=b", b' ;q="x y"']))
        wire += size + ext + b"\r\n" + part + b"\r\n"
    trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\r\nC: d\r\n"]))
    return parts, wire + b"0\r\n" + trailers + b"\r\n"


@given(chunked_bodies(), st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
@settings(max_examples=300, deadline=None)
def test_chunked_framing_survives_any_split(
    body: tuple[list[bytes], bytes], cuts: list[int]
) -> None:
    parts, wire = body
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    framing = Body(chunked=True, length=None)
    out = b"".join(b"".join(framing.feed(wire[a:b])) for a, b in itertools.pairwise(points))
    assert out == b"".join(parts) and framing.done and not framing.excess


@given(st.binary(max_size=600), st.booleans())
@settings(max_examples=500, deadline=None)
def test_any_bytes_are_a_head_a_body_or_a_framing_error(data: bytes, chunked: bool) -> None:
    """A hostile server can send anything: the parser answers or refuses, never crashes."""
    try:
        parse_head(b"HTTP/1.1 200 OK\r\n" + data)
    except FramingError:
        pass
    framing = Body(chunked=chunked, length=None if chunked else 10)
    try:
        for i in range(0, len(data), 7):
            framing.feed(data[i : i + 7])
        framing.eof()
    except FramingError:
        pass


def test_a_request_goes_on_the_wire_as_its_head_declares() -> None:
    plain = Outgoing(b"POST", b"/v1?a=1", [(b"host", b"x"), (b"content-length", b"5")])
    assert plain.head == b"POST /v1?a=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"
    assert [plain.frame(b"he"), plain.frame(b"llo"), plain.end()] == [b"he", b"llo", b""]
    chunks = Outgoing(b"POST", b"/", [(b"Transfer-Encoding", b"chunked")])
    wire = [chunks.frame(b"hello"), chunks.frame(b""), chunks.end()]
    assert wire == [b"5\r\nhello\r\n", b"", b"0\r\n\r\n"]
    unknown = Outgoing(b"GET", b"/", [])
    assert unknown.frame(b"") == b"" and unknown.end() == b""


@pytest.mark.parametrize(
    ("method", "target", "headers", "message"),
    [
        (b"GET", b"/a b", [], "request line"),
        (b"GET\r\n", b"/", [], "request line"),
        (b"GET", b"/", [(b"x a", b"1")], "illegal header"),
        (b"GET", b"/", [(b"x-a", b"1\r\nx-b: 2")], "illegal header"),
        (b"GET", b"/", [(b"content-length", b"-1")], "invalid Content-Length"),
        (b"GET", b"/", [(b"content-length", b"1"), (b"content-length", b"1")], "invalid"),
    ],
)
def test_a_request_that_cannot_be_sent_is_refused(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        Outgoing(method, target, headers)


def test_a_request_body_must_match_its_content_length() -> None:
    over = Outgoing(b"POST", b"/", [(b"content-length", b"3")])
    with pytest.raises(RequestError, match=r"longer than its Content-Length \(3\)"):
        over.frame(b"abcd")
    under = Outgoing(b"POST", b"/", [(b"content-length", b"3")])
    under.frame(b"ab")
    with pytest.raises(RequestError, match="2 bytes, not its Content-Length"):
        under.end()


# --- the connection, over loopback ------------------------------------------------------------


def raw_server(*responses: bytes, keep_open: bool = False) -> LoopbackServer:
    """Answers request n with responses[n] (the last one again after that), written as is."""
    count = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        raw = responses[min(count["n"], len(responses) - 1)]
        count["n"] += 1
        reply.started = True
        reply.writer.write(raw)
        await reply.writer.drain()
        if not keep_open:
            reply.close()

    return LoopbackServer(handler)


async def reply_of(server: LoopbackServer) -> str:
    async with AIStream(f"{server.url}/v1/chat/completions", model="m") as chat:
        return (await chat.send("hi")).content


def sse(tokens: list[str] = TOKENS) -> bytes:
    return b"".join(openai_events(tokens))


async def test_informational_heads_are_skipped() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + SSE_HEAD + chunked(sse())
    )
    async with raw_server(wire) as server:
        assert await reply_of(server) == "".join(TOKENS)


async def test_an_http10_body_read_until_close() -> None:
    wire = b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + sse()
    async with raw_server(wire) as server:
        assert await reply_of(server) == "".join(TOKENS)


async def test_a_response_split_at_every_byte_reads_whole() -> None:
    """The server writes one byte at a time: heads and chunk lines arrive in pieces."""
    wire = SSE_HEAD + chunked(*openai_events(TOKENS))

    async def handler(request: Request, reply: Reply) -> None:
        reply.started = True
        for i in range(len(wire)):
            reply.writer.write(wire[i : i + 1])
            await reply.writer.drain()
        reply.close()

    async with LoopbackServer(handler) as server:
        assert await reply_of(server) == "".join(TOKENS)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunk size",
            id="bad-chunk",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"x-cookie: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n",
            "longer than",
            id="huge-head",
        ),
        pytest.param(b"SMTP ready\r\n\r\n", "not an HTTP/1.x status line", id="not-http"),
    ],
)
async def test_a_broken_server_fails_the_attempt_with_what_it_broke(
    wire: bytes, message: str
) -> None:
    async with raw_server(wire, keep_open=True) as server:
        chat = AIStream(f"{server.url}/v1/chat/completions", model="m", retry=NO_RETRY)
        async with chat:
            with pytest.raises(ConnectionLostError, match=message):
                await chat.send("hi")


async def test_a_body_cut_mid_chunk_is_a_lost_connection_that_resumes() -> None:
    events = openai_events(TOKENS)
    cut = (
        SSE_HEAD
        + b"%x\r\n%s\r\n" % (len(events[0]), events[0])
        + b"40\r\ndata: {"  # half a chunk, then the connection closes
    )
    whole = SSE_HEAD + chunked(*events)
    async with raw_server(cut, whole) as server:
        retry = RetryConfig(max_retries=2, initial_delay=0.0, jitter=False)
        async with AIStream(f"{server.url}/v1/chat/completions", model="m", retry=retry) as chat:
            errors: list[Exception] = []
            chat.on("retry", lambda event: errors.append(event.error))
            assert (await chat.send("hi")).content == "".join(TOKENS)
        assert len(errors) == 1 and isinstance(errors[0], ConnectionLostError)
        assert "incomplete chunked read" in str(errors[0])


async def test_listeners_run_in_the_streaming_tasks_context() -> None:
    """Tokens pushed from the socket's callback reach listeners in the context of the task
    that streams them, not in the one the (reused) connection was opened in."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []
    got = asyncio.Event()
    events = openai_events(TOKENS)

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        base = len(seen)
        for i, event in enumerate(events):
            if 2 <= i <= len(TOKENS) and request.json()["messages"][-1]["content"] != "open":
                while len(seen) < base + i - 1:  # each token after the listener saw the last:
                    await got.wait()  # so it arrives in a socket callback, while pushing
                    got.clear()
            await reply.send(event)
        await reply.end(keep_alive=True)

    def listener(_: str) -> None:
        seen.append(var.get())
        got.set()

    async with LoopbackServer(handler) as server:
        url = f"{server.url}/v1/chat/completions"

        async def converse(who: str) -> None:
            var.set(who)
            async with AIStream(url, model="m") as chat:
                chat.on("token", listener)
                await chat.send(who)

        async with AIStream(url, model="m") as keeper:
            var.set("opener")
            await keeper.send("open")  # opens the connection, and holds the loop's shared pool
            await asyncio.create_task(converse("first"))
            await asyncio.create_task(converse("second"))
        assert server.connections == 1  # both reused the connection `keeper` opened
    assert seen == ["first"] * 3 + ["second"] * 3


async def test_a_reader_that_raises_ends_the_read_and_the_connection() -> None:
    """A wire error raised inside the pushed read (an event over max_event_bytes) reaches the
    caller as itself, and the connection, whose body is still coming, is not reused."""
    big = b"data: " + json.dumps({"x": "y" * 2000}).encode() + b"\n\n"
    release = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(big)
        await release.wait()  # the rest of the body comes after the client gave up on it
        for event in openai_events(TOKENS):
            await reply.send(event)
        await reply.end(keep_alive=True)

    async with LoopbackServer(handler) as server:
        url = f"{server.url}/v1/chat/completions"
        async with AIStream(url, model="m", max_event_bytes=1000, retry=NO_RETRY) as chat:
            with pytest.raises(ProtocolError, match="max_event_bytes"):
                await chat.send("hi")
            release.set()
            with pytest.raises(ProtocolError, match="max_event_bytes"):
                await chat.send("again")
        assert server.connections == 2


async def test_httpx_iterates_the_body_too_and_the_connection_is_reused() -> None:
    """Pulled (as httpx reads error bodies and the relay reads upstreams): same bytes, and
    the connection goes back to the pool after a body read to its end."""
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(b"a" * 5, b"b" * 7)
    async with raw_server(wire, keep_open=True) as server:
        async with new_client(5.0, UNLIMITED) as client:
            for _ in range(3):
                async with client.stream("GET", server.url) as response:
                    assert response.extensions.get(BODY_EXTENSION) is not None
                    assert b"".join([c async for c in response.aiter_bytes()]) == b"aaaaabbbbbbb"
        assert server.connections == 1


async def test_a_body_left_unread_is_not_the_next_replys() -> None:
    """A whole body that nobody read stays behind when its connection is reused: the next
    response on that connection must not start with it."""
    replies = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
    ]
    async with raw_server(*replies, keep_open=True) as server:
        async with new_client(5.0, UNLIMITED) as client:
            async with client.stream("GET", server.url) as response:
                p = response.extensions[BODY_EXTENSION]._p
                while not p.body.done:  # the protocol wakes its waiter as bytes come in
                    await wait_for_bytes(p, "waiter", 5.0, TimeoutError)
            second = await client.get(server.url)
        assert second.content == b"second"
        assert server.connections == 1


async def test_a_user_client_is_not_ours() -> None:
    """``client=`` keeps httpx's own connections (and the pulled read)."""
    async with (
        raw_server(SSE_HEAD + chunked(*openai_events(TOKENS))) as server,
        httpx.AsyncClient() as client,
    ):
        async with client.stream("GET", server.url) as response:
            assert BODY_EXTENSION not in response.extensions
        url = f"{server.url}/v1/chat/completions"
        async with AIStream(url, model="m", client=client) as chat:
            assert (await chat.send("hi")).content == "".join(TOKENS)


async def test_silence_after_tokens_is_a_read_timeout_while_pushing() -> None:
    """The pushed read's `timeout` counts from the last bytes, not from the request."""
    never = asyncio.Event()
    events = openai_events(TOKENS)

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        for event in events[:3]:
            await reply.send(event)
        await never.wait()

    async with LoopbackServer(handler) as server:
        url = f"{server.url}/v1/chat/completions"
        chat = AIStream(url, model="m", timeout=0.2, stall_timeout=None, retry=NO_RETRY)
        async with chat:
            with pytest.raises(StreamTimeoutError, match=r"no data .* \(timeout\) after 3 events"):
                await chat.send("hi")


# --- what a hostile or broken peer does (each found in review against stock httpx) -------------


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server with no HTTP in it: the handler reads and writes bytes itself."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)
            try:
                await self.handler(reader, writer)
            except ConnectionError:
                pass

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.transport.abort()
        self._server.close()
        await self._server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), not a FIN."""
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


async def test_a_reset_cuts_a_body_read_until_close() -> None:
    """A body with no length ends at a clean close; a reset there is a cut, not the end."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npartial-")
        await writer.drain()
        reset(writer)

    async with RawServer(handler) as server, new_client(5.0, UNLIMITED) as client:
        with pytest.raises(httpx.ReadError):
            async with client.stream("GET", server.url) as response:
                async for _ in response.aiter_raw():
                    pass


async def test_a_body_other_than_its_content_length_is_never_sent() -> None:
    """A Content-Length the caller set that the body overruns would put the rest on the wire
    as a second request (smuggling); one it underruns would leave the server waiting."""
    received = bytearray()
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            received.extend(data)
        closed.set()

    smuggled = b"GET /admin HTTP/1.1\r\nhost: x\r\n\r\n"

    async def short() -> AsyncIterator[bytes]:
        yield b"abc"

    async with RawServer(handler) as server, new_client(5.0, UNLIMITED) as client:
        with pytest.raises(httpx.LocalProtocolError, match=r"longer than its Content-Length \(3\)"):
            await client.post(
                server.url, content=b"abc" + smuggled, headers={"content-length": "3"}
            )
        await asyncio.wait_for(closed.wait(), 5.0)
        assert b"/admin" not in received and received.startswith(b"POST / HTTP/1.1")
        with pytest.raises(httpx.LocalProtocolError, match=r"3 bytes, not its Content-Length"):
            await client.post(server.url, content=short(), headers={"content-length": "10"})
        with pytest.raises(httpx.LocalProtocolError, match="invalid Content-Length"):
            await client.post(server.url, content=b"abc", headers={"content-length": "+3"})


async def test_an_early_answer_to_an_upload_is_the_response() -> None:
    """A server may answer (413) before the body is all sent, then stop reading: that answer
    is the response, as with httpx's own connections, not a write error."""
    answered = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 413 Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!"
        )
        await writer.drain()
        writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        answered.set()
        while await reader.read(1 << 16):  # drain what still comes, then close
            pass
        writer.close()

    async def upload() -> AsyncIterator[bytes]:
        yield b"x" * (1 << 20)
        await answered.wait()
        for _ in range(63):  # the 413 arrives while these are written
            yield b"x" * (1 << 20)

    async with RawServer(handler) as server, new_client(5.0, UNLIMITED) as client:
        response = await client.post(server.url, content=upload())
        assert (response.status_code, response.content) == (413, b"too big!")


async def test_a_push_that_ends_early_on_a_full_buffer_still_drains() -> None:
    """Reading pauses while more than 256 KiB wait for a reader. A reader done after its
    first piece must not leave it paused: the drain reads the rest and the connection is
    reused."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"".join(b"8000\r\n" + b"x" * 0x8000 + b"\r\n" for _ in range(10)))
            await release.wait()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with RawServer(handler) as server, new_client(5.0, UNLIMITED) as client:
        for _ in range(2):
            async with client.stream("GET", server.url) as response:
                body = response.extensions[BODY_EXTENSION]
                p = body._p
                while not p.paused:  # 320 KiB arrive before the reader starts
                    await wait_for_bytes(p, "waiter", 5.0, TimeoutError)
                release.set()
                assert await body.push(lambda piece: True)  # done after the first piece
                await body.drain(5.0)
                assert p.body.done
            release.clear()
        assert server.connections == 1


def sockets() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:"):
                found.add(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts sockets in /proc")
async def test_a_write_timeout_closes_the_socket_at_once() -> None:
    """A server that never reads: after the write timeout, the socket is gone, not held open
    by bytes waiting to be sent."""
    accepted = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await asyncio.Event().wait()  # never reads

    timeout = httpx.Timeout(5.0, write=0.2)
    async with RawServer(handler) as server, new_client(timeout, UNLIMITED) as client:
        before = sockets()
        with pytest.raises(httpx.WriteTimeout):
            await client.post(server.url, content=b"x" * (64 << 20))
        assert accepted.is_set()
        for _ in range(10):  # abort closes the socket on the loop's next turns
            if len(sockets() - before) == 1:  # only the server's end
                break
            await asyncio.sleep(0)
        assert len(sockets() - before) == 1


async def test_a_reply_with_both_lengths_closes_its_connection() -> None:
    """Transfer-Encoding and Content-Length both: read as chunked, then the connection is not
    reused, since something on the way may have framed it by the length (RFC 9112 §6.3)."""
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n" + chunked(
        b"hello"
    )
    async with raw_server(wire, keep_open=True) as server:
        async with new_client(5.0, UNLIMITED) as client:
            for _ in range(2):
                assert (await client.get(server.url)).content == b"hello"
        assert server.connections == 2
