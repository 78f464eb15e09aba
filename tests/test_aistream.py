"""AIStream end to end against real loopback servers: the order of events, history, usage,
listeners, tokens(), retry() and reset(), busy turns, the public models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from aistream import AIStream, APIStatusError, Message, RetryConfig, StreamBusyError, Usage
from tests.helpers import TEXT, TOKENS, record, stream_handler
from tests.loopback import Reply, Request, native_events


async def test_send_emits_events_in_contract_order(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["Hi", " there"])))
    chat = AIStream(server.url + "/api/chat")
    seen = record(chat)
    reply = await chat.send("Hello")
    assert [n for n, _ in seen] == [
        "message",
        "streaming-start",
        "token",
        "token",
        "usage",
        "message",
        "streaming-end",
    ]
    assert seen[0][1].role == "user" and seen[0][1].content == "Hello"
    assert seen[5][1].role == "assistant" and seen[5][1].content == "Hi there"
    assert reply.content == "Hi there" and reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    await chat.aclose()


async def test_history_and_usage_totals_sum_over_three_turns(serve: Any) -> None:
    replies = [["One"], ["Two", " two"], ["Three", " three", " three"]]
    turn = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        events = native_events(replies[turn["n"]], usage=(10 + turn["n"], 0))
        turn["n"] += 1
        await reply.start()
        for ev in events:
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    usages: list[Usage] = []
    chat.on("usage", usages.append)
    for text in ("a", "b", "c"):
        await chat.send(text)
    assert [m.role for m in chat.messages] == ["user", "assistant"] * 3
    assert [m.content for m in chat.messages[1::2]] == ["One", "Two two", "Three three three"]
    assert chat.usage == Usage(prompt_tokens=33, completion_tokens=6, total_tokens=39)
    assert usages[-1] == chat.usage and len(usages) == 3
    sent = server.requests[2].json()["messages"]
    assert [m["content"] for m in sent] == ["a", "One", "b", "Two two", "c"]
    await chat.aclose()


async def test_usage_is_estimated_when_server_sends_none(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["abcdefgh"], usage=None)))
    chat = AIStream(server.url + "/api/chat")
    reply = await chat.send("12345678")
    assert reply.usage == Usage(prompt_tokens=2, completion_tokens=2, total_tokens=4)
    assert chat.usage == reply.usage
    await chat.aclose()


async def test_concurrent_send_raises_busy_at_once(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=1, release=release))
    chat = AIStream(server.url + "/api/chat")
    first = asyncio.create_task(chat.send("one"))
    await asyncio.wait_for(server.request_arrived.wait(), 5)
    with pytest.raises(StreamBusyError, match="already streaming"):
        await chat.send("two")
    release.set()
    reply = await asyncio.wait_for(first, 5)
    assert reply.content == TEXT
    assert [m.content for m in chat.messages] == ["one", TEXT]
    await chat.aclose()


async def test_raising_handlers_are_logged_and_stream_goes_on(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(stream_handler(native_events(["a", "b", "c"])))
    chat = AIStream(server.url + "/api/chat")
    later: list[str] = []

    def bad(token: str) -> None:
        raise RuntimeError("listener bug")

    async def bad_async(token: str) -> None:
        raise ValueError("async listener bug")

    chat.on("token", bad)
    chat.on("token", bad_async)
    chat.on("token", later.append)
    errors: list[Exception] = []
    chat.on("error", errors.append)
    with caplog.at_level(logging.ERROR, logger="aistream"):
        reply = await chat.send("hi")
    assert reply.content == "abc" and later == ["a", "b", "c"] and errors == []
    assert sum("listener" in r.getMessage() for r in caplog.records) == 6
    await chat.aclose()


async def test_coroutine_handlers_finish_before_streaming_end(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["a", "b"])))
    chat = AIStream(server.url + "/api/chat")
    order: list[str] = []

    async def slow(token: str) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        order.append(f"token {token}")

    chat.on("token", slow)
    chat.on("streaming-end", lambda: order.append("end"))
    await chat.send("hi")
    assert order == ["token a", "token b", "end"]
    await chat.aclose()


async def test_no_error_listener_is_not_a_crash(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(400, {"error": "bad request"})

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(APIStatusError, match="bad request"):
        await chat.send("hi")
    assert not chat.is_streaming
    await chat.aclose()


async def test_tokens_iterator_yields_the_reply(serve: Any) -> None:
    server = await serve(stream_handler(native_events(TOKENS)))
    chat = AIStream(server.url + "/api/chat")
    got = [t async for t in chat.tokens("hi")]
    assert got == TOKENS and chat.messages[-1].content == TEXT
    await chat.aclose()


async def test_breaking_out_of_tokens_stops_the_turn(serve: Any) -> None:
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=4, release=release))
    chat = AIStream(server.url + "/api/chat")
    got: list[str] = []
    async with contextlib.aclosing(chat.tokens("hi")) as tokens:
        async for token in tokens:
            got.append(token)
            if len(got) == 2:
                break
    release.set()
    assert got == ["Hello", ","] and not chat.is_streaming
    assert chat.messages[-1].finish_reason == "stopped"
    await chat.aclose()


async def test_tokens_iterator_raises_the_turn_error(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(401, {"error": "no key"})

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(APIStatusError, match="no key"):
        async for _ in chat.tokens("hi"):
            pass
    await chat.aclose()


async def test_retry_after_failure_streams_again_and_replaces_last_reply(serve: Any) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await reply.body(400, {"error": "first fails"})
            return
        await reply.start()
        for ev in native_events([f"r{calls['n']}"]):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(APIStatusError):
        await chat.send("hi")
    first = await chat.retry()
    assert first is not None and first.content == "r2"
    second = await chat.retry()
    assert second is not None and second.content == "r3"
    assert [m.content for m in chat.messages] == ["hi", "r3"]
    await chat.aclose()


async def test_retry_with_nothing_to_retry_returns_none() -> None:
    chat = AIStream("http://127.0.0.1:9/api/chat")
    assert await chat.retry() is None


async def test_reset_clears_history_and_usage(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["a"])))
    chat = AIStream(server.url + "/api/chat")
    resets: list[None] = []
    chat.on("reset", lambda: resets.append(None))
    await chat.send("hi")
    chat.reset()
    assert chat.messages == [] and chat.usage == Usage() and resets == [None]
    await chat.aclose()


async def test_getters_return_copies(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["a"])))
    chat = AIStream(server.url + "/api/chat")
    await chat.send("hi")
    messages = chat.get_messages()
    messages[0].content = "changed"
    messages.clear()
    assert chat.messages[0].content == "hi" and len(chat.get_messages()) == 2
    assert chat.get_usage() == chat.usage and chat.get_is_streaming() is False
    await chat.aclose()


def test_bad_constructor_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        AIStream("127.0.0.1:8000/api/chat")
    with pytest.raises(ValueError, match="unknown protocol 'grpc'"):
        AIStream("http://x/api/chat", protocol="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stall_timeout must be a positive"):
        AIStream("http://x/api/chat", stall_timeout=0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryConfig(initial_delay=5, max_delay=1)


def test_message_and_usage_models() -> None:
    usage = Usage.model_validate({"promptTokens": 5, "completionTokens": 2, "totalTokens": 7})
    assert usage == Usage(prompt_tokens=5, completion_tokens=2) == usage + Usage()
    message = Message(role="user", content="x")
    assert message.id and message.timestamp.tzinfo is not None


async def test_prompt_estimate_extends_the_last_reported_count(serve: Any) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        usage = (10, 0) if calls["n"] == 1 else None
        await reply.start()
        for ev in native_events(["abcd"], usage=usage):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    await chat.send("x" * 400)
    second = await chat.send("y" * 8)
    assert second.usage == Usage(prompt_tokens=10 + 1 + 2, completion_tokens=1)
    await chat.aclose()
