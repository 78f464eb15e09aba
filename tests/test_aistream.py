"""AIStream end to end against real loopback servers: events, history, usage, retries, resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

import pytest

from aistream import (
    AIStream,
    APIStatusError,
    ConnectionLostError,
    Message,
    ProtocolError,
    RetryConfig,
    RetryEvent,
    StreamBusyError,
    StreamTimeoutError,
    Usage,
)
from tests.helpers import RecordingSleep, event_ids, sse, stream_handler
from tests.loopback import Reply, Request, native_events, openai_events

TOKENS = ["Hello", ",", " world", "!", " How", " are", " you", " today", "?"]
TEXT = "".join(TOKENS)
NO_JITTER = RetryConfig(max_retries=3, initial_delay=1.0, max_delay=10.0, jitter=False)


def record(chat: AIStream) -> list[tuple[str, Any]]:
    """Subscribe to every event; returns the list they are appended to."""
    seen: list[tuple[str, Any]] = []
    for name in (
        "message",
        "streaming-start",
        "token",
        "usage",
        "retry",
        "streaming-end",
        "error",
        "reset",
    ):
        chat.on(name, lambda *args, _n=name: seen.append((_n, args[0] if args else None)))
    return seen


def tokens_of(seen: list[tuple[str, Any]]) -> list[str]:
    return [p for n, p in seen if n == "token"]


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


async def test_request_body_follows_native_protocol(serve: Any) -> None:
    server = await serve(stream_handler(native_events(["ok"])))
    chat = AIStream(server.url + "/api/chat", model="m1", system_prompt="Be brief")
    await chat.send("t1")
    body = server.requests[0].json()
    assert body == {
        "messages": [{"role": "user", "content": "t1"}],
        "model": "m1",
        "systemPrompt": "Be brief",
        "stream": True,
    }
    assert server.requests[0].headers["content-type"] == "application/json"
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


@pytest.mark.parametrize("cut", range(12), ids=lambda k: f"after-{k}")
async def test_drop_after_event_k_with_ids_resumes_without_loss_or_repeat(
    serve: Any, fake_sleep: RecordingSleep, cut: int
) -> None:
    events = native_events(TOKENS)
    assert len(events) == 12
    server = await serve(stream_handler(events, cut_after={0: cut}))
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    seen = record(chat)
    reply = await chat.send("hi")
    assert reply.content == TEXT
    assert tokens_of(seen) == TOKENS  # every token once, in order
    retries = [p for n, p in seen if n == "retry"]
    assert len(server.requests) == 2 and len(retries) == 1
    ids = event_ids(events)
    expected = ids[cut - 1] if cut else None
    assert server.requests[1].headers.get("last-event-id") == expected
    assert retries[0].resume is (cut > 0)
    assert isinstance(retries[0].error, ConnectionLostError)
    await chat.aclose()


@pytest.mark.parametrize("cut", range(12), ids=lambda k: f"after-{k}")
async def test_drop_after_event_k_without_ids_restarts_and_says_so(
    serve: Any, fake_sleep: RecordingSleep, cut: int
) -> None:
    events = native_events(TOKENS, ids=False)
    server = await serve(stream_handler(events, cut_after={0: cut}))
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    seen = record(chat)
    reply = await chat.send("hi")
    assert reply.content == TEXT
    assert "last-event-id" not in server.requests[1].headers
    names = [n for n, _ in seen]
    retry_at = names.index("retry")
    assert seen[retry_at][1].resume is False
    after = [p for n, p in seen[retry_at:] if n == "token"]
    assert after == TOKENS  # the restarted reply, each token once
    assert tokens_of(seen[:retry_at]) == TOKENS[: max(cut - 1, 0)]
    assert [m.content for m in chat.messages] == ["hi", TEXT]
    await chat.aclose()


@pytest.mark.parametrize("offset", [1, 17, 40, 95, 160, 333, 500])
async def test_cut_mid_event_at_byte_offset_resumes_exactly(
    serve: Any, fake_sleep: RecordingSleep, offset: int
) -> None:
    raw = b"".join(native_events(TOKENS))
    ids = event_ids(native_events(TOKENS))
    first = {"done": False}

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        if not first["done"]:
            first["done"] = True
            await reply.send(raw[:offset])
            reply.cut()
            return
        last = request.headers.get("last-event-id")
        start = ids.index(last) + 1 if last else 0
        for ev in native_events(TOKENS)[start:]:
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    seen = record(chat)
    reply = await chat.send("hi")
    assert reply.content == TEXT and tokens_of(seen) == TOKENS
    assert len(server.requests) == 2
    await chat.aclose()


async def test_openai_stream_end_to_end(serve: Any) -> None:
    server = await serve(stream_handler(openai_events(["I'm", " here"])))
    chat = AIStream(server.url + "/v1/chat/completions", model="gpt-4o", system_prompt="S")
    reply = await chat.send("hi")
    assert reply.content == "I'm here" and reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    body = server.requests[0].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "S"}
    await chat.aclose()


async def test_openai_drop_restarts_with_resume_false(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    server = await serve(stream_handler(openai_events(TOKENS), cut_after={0: 4}))
    chat = AIStream(server.url + "/v1/chat/completions", retry=NO_JITTER, sleep=fake_sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("hi")
    assert reply.content == TEXT
    assert [r.resume for r in retries] == [False]
    await chat.aclose()


async def test_503_then_200_retries_once(serve: Any, fake_sleep: RecordingSleep) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await reply.body(503, {"error": "busy"})
            return
        await reply.start()
        for ev in native_events(["ok"]):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("hi")
    assert reply.content == "ok"
    assert [(r.attempt, r.delay, r.resume) for r in retries] == [(1, 1.0, False)]
    assert isinstance(retries[0].error, APIStatusError) and retries[0].error.status_code == 503
    assert fake_sleep.delays == [1.0]
    await chat.aclose()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "1"}, 1.0, id="retry-after-seconds"),
        pytest.param({"retry-after-ms": "50"}, 0.05, id="retry-after-ms"),
        pytest.param({"Retry-After": "3", "retry-after-ms": "250"}, 0.25, id="ms-wins"),
    ],
)
async def test_429_server_delay_is_used_exactly_without_jitter(
    serve: Any, fake_sleep: RecordingSleep, headers: dict[str, str], expected: float
) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await reply.body(429, {"error": {"message": "slow down"}}, headers)
            return
        await reply.start()
        for ev in native_events(["ok"]):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(
        server.url + "/api/chat", retry=RetryConfig(jitter=True), sleep=fake_sleep, rng=lambda: 0.9
    )
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    await chat.send("hi")
    assert [r.delay for r in retries] == [expected]
    assert fake_sleep.delays == [expected]
    await chat.aclose()


async def test_retry_after_beyond_cap_gives_up_with_clear_error(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(429, {"error": "quota"}, {"Retry-After": "3600"})

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", sleep=fake_sleep)
    with pytest.raises(APIStatusError, match="3600 s, more than the 60 s") as info:
        await chat.send("hi")
    assert info.value.status_code == 429 and len(server.requests) == 1
    await chat.aclose()


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_fail_at_once_with_server_message(
    serve: Any, fake_sleep: RecordingSleep, status: int
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(status, {"error": {"message": f"nope {status}", "type": "bad"}})

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", sleep=fake_sleep)
    seen = record(chat)
    with pytest.raises(APIStatusError) as info:
        await chat.send("hi")
    assert info.value.status_code == status and f"nope {status}" in str(info.value)
    assert len(server.requests) == 1 and fake_sleep.delays == []
    assert [n for n, _ in seen] == ["message", "streaming-start", "error", "streaming-end"]
    assert seen[2][1] is info.value
    assert [m.role for m in chat.messages] == ["user"]  # kept for retry()
    assert not chat.is_streaming
    await chat.aclose()


async def test_exponential_schedule_without_jitter_then_gives_up(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(500, {"error": "boom"})

    server = await serve(handler)
    cfg = RetryConfig(max_retries=4, initial_delay=1.0, max_delay=5.0, jitter=False)
    chat = AIStream(server.url + "/api/chat", retry=cfg, sleep=fake_sleep)
    with pytest.raises(APIStatusError, match="gave up after 4 retries"):
        await chat.send("hi")
    assert fake_sleep.delays == [1.0, 2.0, 4.0, 5.0]
    assert len(server.requests) == 5
    await chat.aclose()


async def test_linear_schedule_with_jitter_stays_in_range(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(502, {"error": "bad gateway"})

    server = await serve(handler)
    cfg = RetryConfig(max_retries=3, backoff="linear", initial_delay=2.0, max_delay=5.0)
    chat = AIStream(server.url + "/api/chat", retry=cfg, sleep=fake_sleep, rng=lambda: 1.0)
    with pytest.raises(APIStatusError):
        await chat.send("hi")
    assert fake_sleep.delays == [1.5, 3.0, 3.75]  # 2, 4, 5 times 0.75
    await chat.aclose()


async def test_stall_is_retried_then_raises_stream_timeout(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    never = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(native_events(["a"])[0])
        await never.wait()

    server = await serve(handler)
    chat = AIStream(
        server.url + "/api/chat",
        retry=RetryConfig(max_retries=2, jitter=False),
        stall_timeout=0.1,
        sleep=fake_sleep,
    )
    with pytest.raises(StreamTimeoutError, match="stall_timeout"):
        await chat.send("hi")
    assert len(server.requests) == 3 and len(fake_sleep.delays) == 2
    await chat.aclose()


async def test_pings_do_not_hide_a_stall(serve: Any, fake_sleep: RecordingSleep) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(native_events(["a"])[0])
        while True:  # a chatty proxy: heartbeats forever, no content
            await reply.send(b": ping\n\n")
            await asyncio.sleep(0.01)

    server = await serve(handler)
    chat = AIStream(
        server.url + "/api/chat",
        retry=RetryConfig(max_retries=0),
        timeout=5.0,
        stall_timeout=0.15,
        sleep=fake_sleep,
    )
    with pytest.raises(StreamTimeoutError, match="stall_timeout"):
        await chat.send("hi")
    await chat.aclose()


async def test_silent_connection_hits_timeout(serve: Any, fake_sleep: RecordingSleep) -> None:
    never = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await never.wait()

    server = await serve(handler)
    chat = AIStream(
        server.url + "/api/chat",
        retry=RetryConfig(max_retries=1, jitter=False),
        timeout=0.1,
        stall_timeout=None,
        sleep=fake_sleep,
    )
    with pytest.raises(StreamTimeoutError, match=r"\(timeout\)"):
        await chat.send("hi")
    assert len(server.requests) == 2
    await chat.aclose()


async def test_connection_refused_is_retried_then_clear(fake_sleep: RecordingSleep) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    chat = AIStream(
        f"http://127.0.0.1:{port}/api/chat",
        retry=RetryConfig(max_retries=2, jitter=False),
        sleep=fake_sleep,
    )
    with pytest.raises(ConnectionLostError, match="could not connect") as info:
        await chat.send("hi")
    assert "gave up after 2 retries" in str(info.value)
    assert fake_sleep.delays == [1.0, 2.0]
    await chat.aclose()


async def test_malformed_json_event_is_logged_and_skipped(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    events = native_events(["a", "b"])
    events.insert(2, b"event: token\nid: s1:x\ndata: {not json\n\n")
    server = await serve(stream_handler(events))
    chat = AIStream(server.url + "/api/chat")
    with caplog.at_level(logging.WARNING, logger="aistream"):
        reply = await chat.send("hi")
    assert reply.content == "ab"
    assert any("malformed JSON" in r.getMessage() for r in caplog.records)
    await chat.aclose()


async def test_in_stream_error_not_transient_fails_turn(serve: Any) -> None:
    events = [
        sse({"id": "s", "model": "m"}, "start", "s:0"),
        sse({"token": "a", "index": 0}, "token", "s:1"),
        sse({"error": "context too long", "code": "context_length"}, "error", "s:2"),
    ]
    server = await serve(stream_handler(events))
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(APIStatusError, match="context too long") as info:
        await chat.send("hi")
    assert info.value.code == "context_length" and len(server.requests) == 1
    await chat.aclose()


async def test_in_stream_transient_error_is_retried(serve: Any, fake_sleep: RecordingSleep) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        await reply.start()
        if calls["n"] == 1:
            await reply.send(sse({"error": {"message": "Overloaded", "type": "server_error"}}))
            await reply.end()
            return
        for ev in openai_events(["fine"]):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/v1/chat/completions", sleep=fake_sleep)
    reply = await chat.send("hi")
    assert reply.content == "fine" and calls["n"] == 2
    await chat.aclose()


async def test_twenty_megabyte_line_raises_protocol_error(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(b"data: ")
        block = b"a" * (1 << 20)
        for _ in range(20):
            if reply.closed:
                return
            await reply.send(block)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(ProtocolError, match="max_event_bytes"):
        await chat.send("hi")
    assert len(server.requests) == 1  # not retried
    await chat.aclose()


async def test_json_answer_instead_of_stream_is_a_clear_error(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(200, {"choices": [{"message": {"content": "not streamed"}}]})

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat")
    with pytest.raises(ProtocolError, match="instead of a stream"):
        await chat.send("hi")
    await chat.aclose()


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


async def test_a_long_reply_cut_and_restarted_arrives_exact(serve: Any) -> None:
    words = [f" w{i}" for i in range(300)]  # past several blocks of joined deltas
    server = await serve(stream_handler(openai_events(words), cut_after={0: 170}))
    chat = AIStream(
        server.url + "/v1/chat/completions", protocol="openai", sleep=lambda d: asyncio.sleep(0)
    )
    seen = record(chat)
    reply = await asyncio.wait_for(chat.send("hi"), 10)
    assert reply.content == "".join(words)
    assert [p.resume for n, p in seen if n == "retry"] == [False]  # no ids: a restart
    await chat.aclose()


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


async def test_shared_client_is_borrowed_not_closed(serve: Any) -> None:
    import httpx

    server = await serve(stream_handler(native_events(["a"])))
    async with httpx.AsyncClient() as client:
        chat = AIStream(server.url + "/api/chat", client=client)
        assert (await chat.send("hi")).content == "a"
        await chat.aclose()
        assert not client.is_closed


def test_send_sync_in_plain_script(threaded_server: Any) -> None:
    url = threaded_server(stream_handler(native_events(["sync", " ok"])))
    chat = AIStream(url + "/api/chat")
    assert chat.send_sync("hi").content == "sync ok"
    assert chat.send_sync("again").content == "sync ok"  # a second loop works too
    assert len(chat.messages) == 4


async def test_send_sync_inside_a_running_loop(threaded_server: Any) -> None:
    url = threaded_server(stream_handler(native_events(["from", " a", " notebook"])))
    chat = AIStream(url + "/api/chat")
    tokens: list[str] = []
    chat.on("token", tokens.append)
    reply = chat.send_sync("hi")  # as in a Jupyter cell: a loop is running in this thread
    assert reply.content == "from a notebook" and tokens == ["from", " a", " notebook"]


async def test_secrets_never_in_repr_errors_or_logs(
    serve: Any, caplog: pytest.LogCaptureFixture, fake_sleep: RecordingSleep
) -> None:
    secret = "sk-test-SECRET-0123456789"

    async def handler(request: Request, reply: Reply) -> None:
        assert request.headers["authorization"] == f"Bearer {secret}"
        await reply.body(401, {"error": {"message": f"Incorrect API key provided: {secret}"}})

    server = await serve(handler)
    chat = AIStream(
        server.url + "/api/chat?key=" + secret,
        headers={"Authorization": f"Bearer {secret}", "x-api-key": secret},
        sleep=fake_sleep,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(APIStatusError) as info:
        await chat.send("hi")
    texts = [repr(chat), str(info.value), repr(info.value), json.dumps(info.value.body)]
    texts += [r.getMessage() for r in caplog.records]
    assert all(secret not in t for t in texts)
    assert "Incorrect API key provided" in str(info.value)
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


async def test_resume_refused_with_404_restarts_the_reply(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    events = native_events(TOKENS)
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        if "last-event-id" in request.headers:
            await reply.body(404, {"error": "unknown stream", "code": "unknown_stream"})
            return
        await reply.start()
        for i, ev in enumerate(events):
            if calls["n"] == 1 and i == 5:
                reply.cut()
                return
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("hi")
    assert reply.content == TEXT
    assert [r.resume for r in retries] == [True, False]
    assert "cannot resume" in str(retries[1].error)
    assert len(server.requests) == 3
    await chat.aclose()


async def test_reconnect_to_a_new_generation_restarts_instead_of_splicing(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    calls = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        await reply.start()
        if calls["n"] == 1:
            for ev in native_events(["Old", " text", " here"], stream_id="a")[:3]:
                await reply.send(ev)
            reply.cut()
            return
        # A server without a replay store ignores Last-Event-ID and generates anew.
        for ev in native_events(["New", " reply"], stream_id="b"):
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("hi")
    assert reply.content == "New reply"
    assert [r.resume for r in retries] == [True, False]
    await chat.aclose()


async def test_retryable_in_stream_error_restarts_instead_of_resuming_into_it(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    calls = {"n": 0}
    overloaded = {"error": "overloaded", "code": "overloaded", "retryable": True}
    first = [*native_events(["Par", "tial"])[:3], sse(overloaded, "error", "s1:3")]

    async def handler(request: Request, reply: Reply) -> None:
        calls["n"] += 1
        events = first if calls["n"] == 1 else native_events(["Whole"], stream_id="s2")
        await reply.start()
        for ev in events:
            await reply.send(ev)
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=NO_JITTER, sleep=fake_sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("hi")
    assert reply.content == "Whole"
    assert [r.resume for r in retries] == [False]
    assert "last-event-id" not in server.requests[1].headers
    await chat.aclose()


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


async def test_restarts_that_make_no_progress_use_up_the_budget(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(openai_events(["a", "b"])[0])  # always dies after its first chunk
        reply.cut()

    server = await serve(handler)
    chat = AIStream(
        server.url + "/v1/chat/completions",
        retry=RetryConfig(max_retries=3, jitter=False),
        sleep=fake_sleep,
    )
    with pytest.raises(ConnectionLostError, match="gave up after 3 retries"):
        await asyncio.wait_for(chat.send("hi"), 10)
    assert len(server.requests) == 4  # the first attempt and 3 retries: no later one did better
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
