"""Stopping a turn: stop(), a cancelled caller and aclose(), at every phase of the turn, with
the native cancelling DELETE.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aistream import AIStream, Message
from tests.helpers import TOKENS, record, stream_handler
from tests.loopback import Reply, Request, native_events


async def test_stop_mid_stream_keeps_partial_and_sends_delete(serve: Any) -> None:
    release = asyncio.Event()
    events = native_events(TOKENS)
    server = await serve(stream_handler(events, hold_after=4, release=release))
    chat = AIStream(server.url + "/api/chat")
    seen = record(chat)

    def on_token(token: str) -> None:
        if token == ",":
            chat.stop()

    chat.on("token", on_token)
    reply = await asyncio.wait_for(chat.send("hi"), 5)
    release.set()
    assert reply.content == "Hello," and reply.finish_reason == "stopped"
    assert chat.messages[-1].content == "Hello,"
    assert "error" not in [n for n, _ in seen] and not chat.is_streaming
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/api/chat"),
        ("DELETE", "/api/chat/s1"),
    ]
    await chat.aclose()


async def test_stop_during_backoff_ends_without_another_attempt(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(503, {"error": "busy"})

    server = await serve(handler)
    slept = asyncio.Event()

    async def blocking_sleep(delay: float) -> None:
        slept.set()
        await asyncio.Event().wait()  # only a stop() ends this wait

    chat = AIStream(server.url + "/api/chat", sleep=blocking_sleep)
    seen = record(chat)
    task = asyncio.create_task(chat.send("hi"))
    await asyncio.wait_for(slept.wait(), 5)
    chat.stop()
    reply = await asyncio.wait_for(task, 5)
    assert reply.finish_reason == "stopped" and reply.content == ""
    assert len(server.requests) == 1
    assert [n for n, _ in seen][-1] == "streaming-end" and "error" not in [n for n, _ in seen]
    assert [m.role for m in chat.messages] == ["user"]
    await chat.aclose()


async def test_stop_before_the_first_attempt_starts_returns_a_stopped_reply(serve: Any) -> None:
    server = await serve(stream_handler(native_events(TOKENS)))
    chat = AIStream(server.url + "/api/chat")
    task = asyncio.create_task(chat.send("hi"))
    await asyncio.sleep(0)  # send() has made its attempts task; that task has not run yet
    assert chat.is_streaming
    chat.stop()
    reply = await asyncio.wait_for(task, 5)  # a reply, not the stop's CancelledError
    assert reply.finish_reason == "stopped" and reply.content == ""
    assert not server.requests
    await chat.aclose()


async def test_a_caller_cancelled_right_after_a_stop_still_sees_its_cancel(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=2, release=release))
    chat = AIStream(server.url + "/api/chat")
    tasks: list[asyncio.Task[Message]] = []

    def on_token(token: str) -> None:
        chat.stop()  # the attempts task now has a cancel pending...
        tasks[0].cancel()  # ...and the caller is cancelled in the same step (a timeout, say)

    chat.on("token", on_token)
    tasks.append(asyncio.create_task(chat.send("hi")))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(tasks[0], 5)
    release.set()
    assert chat.messages[-1].finish_reason == "stopped" and chat.messages[-1].content == "Hello"
    await chat.aclose()


async def test_aclose_before_a_tokens_turn_starts_sends_nothing(serve: Any) -> None:
    server = await serve(stream_handler(native_events(TOKENS)))
    chat = AIStream(server.url + "/api/chat")
    tokens = chat.tokens("hi")
    first = asyncio.ensure_future(anext(tokens, None))
    await asyncio.sleep(0)  # the turn exists; its runner has not started
    await chat.aclose()
    assert await asyncio.wait_for(first, 5) is None  # the iterator ends, empty
    assert not server.requests and not chat._clients._pools


async def test_aclose_mid_turn_still_asks_the_server_to_cancel(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=2, release=release))
    chat = AIStream(server.url + "/api/chat")
    got_one = asyncio.Event()
    chat.on("token", lambda token: got_one.set())
    turn = asyncio.create_task(chat.send("hi"))
    await asyncio.wait_for(got_one.wait(), 5)
    await chat.aclose()  # the DELETE goes out before the pool is let go
    release.set()
    reply = await asyncio.wait_for(turn, 5)
    assert reply.finish_reason == "stopped"
    assert ("DELETE", "/api/chat/s1") in [(r.method, r.path) for r in server.requests]


async def test_cancelling_the_caller_propagates_and_keeps_partial(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=3, release=release))
    chat = AIStream(server.url + "/api/chat")
    got_two = asyncio.Event()
    chat.on("token", lambda t: got_two.set() if t == "," else None)
    task = asyncio.create_task(chat.send("hi"))
    await asyncio.wait_for(got_two.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert chat.messages[-1].content == "Hello," and not chat.is_streaming
    await chat.aclose()


async def test_a_turn_names_its_phase_from_start_to_settled(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=2, release=release))
    chat = AIStream(server.url + "/api/chat")
    got_one = asyncio.Event()
    chat.on("token", lambda token: got_one.set())
    task = asyncio.create_task(chat.send("hi"))
    await asyncio.sleep(0)
    turn = chat._turn
    assert turn is not None and turn.phase == "starting"
    await asyncio.wait_for(got_one.wait(), 5)
    assert turn.phase == "attempting" and "attempting" in repr(turn)
    chat.stop()
    assert turn.phase == "stopping"
    release.set()
    assert (await asyncio.wait_for(task, 5)).finish_reason == "stopped"
    assert turn.phase == "settled"
    await chat.aclose()
