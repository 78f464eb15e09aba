"""EventStreamResponse by direct ASGI calls (STYLE C18), plus one disconnect over real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from aistream._wire._events import (
    Done,
    FinishReason,
    Metadata,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._sse import encode_sse
from aistream.server import EventStreamResponse
from aistream.server._encoders import NativeEncoder
from aistream.server._response import SendLock

from .helpers import FakeClock, FakePeer, guard, http_scope, native_events

PING = b": ping\n\n"


async def events(*items: StreamEvent | str) -> AsyncIterator[StreamEvent | str]:
    for item in items:
        yield item


async def run(response: EventStreamResponse, peer: FakePeer, method: str = "GET") -> None:
    await guard(response(http_scope(method), peer.receive, peer.send))


class Gate:
    """An async generator the test feeds one item at a time; records that it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent | str] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.started = False

    async def stream(self) -> AsyncIterator[StreamEvent | str]:
        self.started = True
        try:
            while True:
                yield await self.queue.get()
        finally:
            self.closed.set()


# --- format -----------------------------------------------------------------------------------


async def test_response_headers_are_the_sse_headers() -> None:
    peer = FakePeer()
    await run(EventStreamResponse(events("Hi")), peer)
    start = peer.messages[0]
    assert start["status"] == 200
    assert peer.headers == {
        "content-type": "text/event-stream",
        "cache-control": "no-cache, no-transform",
        "connection": "keep-alive",
        "x-accel-buffering": "no",
    }


async def test_response_custom_headers_are_added() -> None:
    peer = FakePeer()
    await run(EventStreamResponse(events(), headers={"X-Request-Id": "r1"}), peer)
    assert peer.headers["x-request-id"] == "r1"
    assert peer.headers["content-type"] == "text/event-stream"


async def test_response_bytes_are_the_native_format_with_lf_and_ids() -> None:
    peer = FakePeer()
    source = events("Hello", TextDelta(" world"), UsageReport(5, 2), FinishReason("stop"))
    await run(EventStreamResponse(source, stream_id="s1", model="demo"), peer)
    assert peer.body == (
        b'event: start\nid: s1:0\ndata: {"id":"s1","model":"demo"}\n\n'
        b'event: token\nid: s1:1\ndata: {"token":"Hello","index":0}\n\n'
        b'event: token\nid: s1:2\ndata: {"token":" world","index":1}\n\n'
        b'event: usage\nid: s1:3\ndata: {"usage":{"promptTokens":5,"completionTokens":2,'
        b'"totalTokens":7}}\n\n'
        b'event: done\nid: s1:4\ndata: {"finishReason":"stop"}\n\n'
    )
    assert b"\r" not in peer.body
    assert peer.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_response_every_event_kind_round_trips_through_the_client_parser() -> None:
    peer = FakePeer()
    source = events(
        TextDelta("Hi"),
        ReasoningDelta("thinking"),
        ToolCallDone("call_1", "get_weather", '{"city":"Paris"}'),
        Metadata({"requestId": "r1"}),
        UsageReport(5, 2, 7),
        FinishReason("length"),
    )
    await run(EventStreamResponse(source, stream_id="s1", model="m"), peer)
    assert native_events(peer.body) == [
        StreamStarted("s1", "m"),
        TextDelta("Hi", 0),
        ReasoningDelta("thinking"),
        ToolCallDone("call_1", "get_weather", '{"city":"Paris"}'),
        Metadata({"requestId": "r1"}),
        UsageReport(5, 2, 7),
        FinishReason("length"),
        Done(),
    ]


async def test_response_error_event_ends_the_stream_without_done() -> None:
    peer = FakePeer()
    source = events("a", ServerError("model overloaded", "overloaded", True), "never")
    await run(EventStreamResponse(source, stream_id="s1"), peer)
    decoded = native_events(peer.body)
    assert decoded[-1] == ServerError(
        "model overloaded",
        "overloaded",
        True,
        {"error": "model overloaded", "code": "overloaded", "retryable": True},
    )
    assert b"never" not in peer.body and b"event: done" not in peer.body
    assert peer.complete


async def test_response_event_and_id_values_never_carry_line_breaks() -> None:
    with pytest.raises(ValueError, match="control characters"):
        NativeEncoder("bad\nid")
    peer = FakePeer()
    await run(EventStreamResponse(events("line one\nline two\r\n")), peer)
    assert native_events(peer.body)[1] == TextDelta("line one\nline two\r\n", 0)


@pytest.mark.parametrize(
    "text",
    ['"quoted"', "back\\slash", "new\nline", "tab\t", "ünïcödé", "\u2028sep", "😀", "\x00", "</p>"],
)
def test_encoder_token_fast_path_equals_encode_sse_of_the_json(text: str) -> None:
    encoder = NativeEncoder("s1")
    encoder.start()
    generic = encode_sse(
        json.dumps({"token": text, "index": 0}, ensure_ascii=False, separators=(",", ":")),
        event="token",
        id="s1:1",
    )
    assert encoder.encode(TextDelta(text)) == generic


async def test_response_empty_tokens_are_skipped_without_spending_an_index() -> None:
    peer = FakePeer()
    await run(EventStreamResponse(events("", "a", TextDelta(""), "b")), peer)
    tokens = [e for e in native_events(peer.body) if isinstance(e, TextDelta)]
    assert tokens == [TextDelta("a", 0), TextDelta("b", 1)]


async def test_response_failing_source_ends_with_an_internal_error_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "partial"
        raise RuntimeError("secret detail")

    peer = FakePeer()
    with caplog.at_level(logging.ERROR, "aistream.server"):
        await run(EventStreamResponse(broken()), peer)
    error = native_events(peer.body)[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("internal_error", False)
    assert "secret detail" not in error.message  # details go to the log, not to the client
    assert "secret detail" in caplog.text


async def test_response_unknown_item_type_is_an_internal_error() -> None:
    peer = FakePeer()
    await run(EventStreamResponse(events(42)), peer)  # type: ignore[arg-type]
    error = native_events(peer.body)[-1]
    assert isinstance(error, ServerError) and error.code == "internal_error"


def test_response_rejects_content_that_is_neither_iterable_nor_producer() -> None:
    with pytest.raises(TypeError, match="async iterable"):
        EventStreamResponse(["sync", "list"])  # type: ignore[arg-type]


async def test_response_head_sends_headers_only_and_never_starts_the_source() -> None:
    gate = Gate()
    source = gate.stream()
    peer = FakePeer()
    await run(EventStreamResponse(source), peer, method="HEAD")
    assert peer.headers["content-type"] == "text/event-stream"
    assert peer.body == b"" and peer.complete and not gate.started


# --- writer -----------------------------------------------------------------------------------


async def test_writer_producer_sends_events_counts_them_and_ends_once() -> None:
    seen: dict[str, Any] = {}

    async def produce(stream: EventStreamResponse) -> None:
        seen["active_at_start"] = stream.is_active
        await stream.send_token("Hello")
        await stream.send_metadata({"k": "v"})
        await stream.send_usage(3, 1)
        await stream.end("length")
        await stream.end()  # idempotent
        seen["count"] = stream.message_count
        seen["active_after_end"] = stream.is_active
        with pytest.raises(RuntimeError, match="has ended"):
            await stream.send_token("late")

    peer = FakePeer()
    response = EventStreamResponse(produce, stream_id="w1")
    await run(response, peer)
    assert seen == {"active_at_start": True, "count": 5, "active_after_end": False}
    assert native_events(peer.body) == [
        StreamStarted("w1", None),
        TextDelta("Hello", 0),
        Metadata({"k": "v"}),
        UsageReport(3, 1, 4),
        FinishReason("length"),
        Done(),
    ]
    assert peer.body.count(b"event: done") == 1


async def test_writer_producer_that_returns_gets_done_written_for_it() -> None:
    async def produce(stream: EventStreamResponse) -> None:
        await stream.send_reasoning("hmm")
        await stream.send_tool_call("c1", "lookup", "{}")

    peer = FakePeer()
    await run(EventStreamResponse(produce), peer)
    assert native_events(peer.body)[-1] == Done()
    assert ToolCallDone("c1", "lookup", "{}") in native_events(peer.body)


async def test_writer_send_error_is_terminal() -> None:
    async def produce(stream: EventStreamResponse) -> None:
        await stream.send_error("upstream failed", code="upstream_error", retryable=True)
        assert not stream.is_active

    peer = FakePeer()
    await run(EventStreamResponse(produce), peer)
    error = native_events(peer.body)[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert b"event: done" not in peer.body


async def test_writer_before_the_response_starts_raises() -> None:
    response = EventStreamResponse(events())
    assert not response.is_active
    with pytest.raises(RuntimeError, match="not started"):
        await response.send_token("early")


async def test_writer_abort_from_the_producer_ends_without_done() -> None:
    async def produce(stream: EventStreamResponse) -> None:
        await stream.send_token("a")
        await stream.abort()
        await stream.abort()  # idempotent
        assert not stream.is_active
        with pytest.raises(RuntimeError, match="has ended"):
            await stream.send_token("b")

    peer = FakePeer()
    await run(EventStreamResponse(produce), peer)
    assert b"event: done" not in peer.body and peer.complete


async def test_writer_abort_from_outside_closes_a_waiting_source() -> None:
    gate = Gate()
    peer = FakePeer()
    response = EventStreamResponse(gate.stream())
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    gate.queue.put_nowait("a")
    await peer.changed.until(lambda: b'"a"' in peer.body)
    await response.abort()
    await guard(task)
    assert gate.closed.is_set() and peer.complete
    assert b"event: done" not in peer.body


# --- heartbeats, disconnects, slow clients -----------------------------------------------------


async def test_heartbeat_ping_after_each_interval_of_silence(fake_clock: FakeClock) -> None:
    gate = Gate()
    peer = FakePeer()
    response = EventStreamResponse(
        gate.stream(),
        heartbeat_interval=15.0,
        send_timeout=None,
        sleep=fake_clock.sleep,
        clock=fake_clock,
    )
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    await fake_clock.sleeping(due=15.0)
    assert PING not in peer.body
    fake_clock.advance(15.0)
    await peer.changed.until(lambda: peer.body.count(PING) == 1)
    await fake_clock.sleeping(due=30.0)

    fake_clock.advance(5.0)  # t=20: a token, so the line is busy again
    gate.queue.put_nowait("tok")
    await peer.changed.until(lambda: b'"tok"' in peer.body)
    fake_clock.advance(10.0)  # t=30: only 10 s of silence: no ping, next check at 35
    await fake_clock.sleeping(due=35.0)
    assert peer.body.count(PING) == 1
    fake_clock.advance(5.0)
    await peer.changed.until(lambda: peer.body.count(PING) == 2)
    assert peer.body.endswith(PING)

    peer.disconnect()
    await guard(task)


async def test_heartbeat_default_interval_is_15_seconds_and_none_disables_it(
    fake_clock: FakeClock,
) -> None:
    assert EventStreamResponse(events()).heartbeat_interval == 15.0
    gate = Gate()
    peer = FakePeer()
    response = EventStreamResponse(
        gate.stream(), heartbeat_interval=None, send_timeout=None, sleep=fake_clock.sleep
    )
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    gate.queue.put_nowait("a")
    await peer.changed.until(lambda: b'"a"' in peer.body)
    assert fake_clock.dues() == []  # no timer at all
    peer.disconnect()
    await guard(task)


async def test_disconnect_cancels_and_closes_the_generator() -> None:
    gate = Gate()
    peer = FakePeer()
    response = EventStreamResponse(gate.stream())
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    gate.queue.put_nowait("a")
    await peer.changed.until(lambda: b'"a"' in peer.body)
    peer.disconnect()
    await guard(gate.closed.wait())
    await guard(task)
    assert response.disconnected and not response.is_active
    assert b"event: done" not in peer.body


async def test_disconnect_while_the_source_is_mid_await_runs_its_finally() -> None:
    cleaned = asyncio.Event()

    async def slow() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.Event().wait()  # an upstream that never answers
            yield "never"
        finally:
            cleaned.set()

    peer = FakePeer()
    response = EventStreamResponse(slow())
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    await peer.changed.until(lambda: b"first" in peer.body)
    peer.disconnect()
    await guard(cleaned.wait())
    await guard(task)


async def test_send_oserror_counts_as_a_disconnect() -> None:
    gate = Gate()
    response = EventStreamResponse(gate.stream())
    messages: list[Any] = []

    async def send(message: Any) -> None:
        if len(messages) == 2:
            raise OSError("client went away")  # what an ASGI 2.4 server does
        messages.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    task = asyncio.create_task(response(http_scope(), receive, send))
    gate.queue.put_nowait("a")
    await guard(gate.closed.wait())
    await guard(task)  # no exception escapes
    assert response.disconnected


async def test_send_timeout_closes_a_frozen_client_and_frees_the_producer(
    fake_clock: FakeClock,
) -> None:
    produced: list[int] = []
    cleaned = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield f" w{i}"
        finally:
            cleaned.set()

    peer = FakePeer(freeze_after=3)  # start, two tokens, then the client stops reading
    response = EventStreamResponse(
        endless(),
        heartbeat_interval=None,
        send_timeout=5.0,
        sleep=fake_clock.sleep,
        clock=fake_clock,
    )
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    await peer.changed.until(lambda: peer.frozen)
    await fake_clock.sleeping(due=5.0)
    fake_clock.advance(5.0)
    await guard(task)
    assert response.timed_out
    assert cleaned.is_set()
    assert len(produced) == 3  # the generator was held at one send, then closed, not left running


async def test_blocked_send_gets_no_ping_and_the_watchdog_does_not_spin(
    fake_clock: FakeClock,
) -> None:
    peer = FakePeer(freeze_after=1)  # the first token's send never returns
    response = EventStreamResponse(
        events("a", "b"),
        heartbeat_interval=15.0,
        send_timeout=30.0,
        sleep=fake_clock.sleep,
        clock=fake_clock,
    )
    task = asyncio.create_task(response(http_scope(), peer.receive, peer.send))
    await peer.changed.until(lambda: peer.frozen)
    await fake_clock.sleeping(due=15.0)
    fake_clock.advance(20.0)  # heartbeat due, but a send is in flight: check again later
    await fake_clock.sleeping(due=30.0)
    assert fake_clock.dues() == [30.0]
    fake_clock.advance(10.0)
    await guard(task)
    assert response.timed_out and PING not in peer.body


async def test_uvicorn_client_disconnect_closes_the_generator_within_a_second(
    serve_app: Any,
) -> None:
    cleaned = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(endless())

    url = await serve_app(Starlette(routes=[Route("/stream", endpoint)]))
    async with httpx.AsyncClient() as client, client.stream("GET", url + "/stream") as response:
        async for chunk in response.aiter_bytes():
            if b"first" in chunk:
                break
    await asyncio.wait_for(cleaned.wait(), 1.0)


# --- the send lock ----------------------------------------------------------------------------


async def test_send_lock_serializes_waiters_in_order() -> None:
    lock = SendLock()
    order: list[str] = []
    await lock.acquire()

    async def worker(name: str) -> None:
        async with lock:
            order.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in "bc"]
    await asyncio.sleep(0)  # let both queue up behind the holder
    assert len(lock.waiters) == 2
    lock.release()
    await guard(asyncio.gather(*tasks))
    assert order == ["b", "c"] and not lock.busy


async def test_send_lock_a_woken_waiter_that_is_cancelled_passes_the_turn_on() -> None:
    lock = SendLock()
    await lock.acquire()
    got: list[str] = []

    async def worker(name: str) -> None:
        async with lock:
            got.append(name)

    first = asyncio.create_task(worker("first"))
    second = asyncio.create_task(worker("second"))
    await asyncio.sleep(0)
    lock.release()  # wakes "first" ...
    first.cancel()  # ... which is cancelled before it runs
    await guard(second)
    assert got == ["second"] and first.cancelled() and not lock.busy
