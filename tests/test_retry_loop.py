"""The retry loop end to end: resume with Last-Event-ID, restart without ids, status codes,
schedules, stalls, timeouts and in-stream errors, against real loopback servers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from aistream import (
    AIStream,
    APIStatusError,
    ConnectionLostError,
    RetryConfig,
    RetryEvent,
    StreamTimeoutError,
)
from tests.helpers import (
    NO_JITTER,
    TEXT,
    TOKENS,
    RecordingSleep,
    event_ids,
    record,
    refuse,
    retrying_chat,
    sse,
    stream_handler,
    tokens_of,
)
from tests.loopback import Reply, Request, native_events, openai_events


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


async def test_openai_drop_restarts_with_resume_false(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    server = await serve(stream_handler(openai_events(TOKENS), cut_after={0: 4}))
    chat, retries = retrying_chat(server.url + "/v1/chat/completions", fake_sleep)
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
    chat, retries = retrying_chat(server.url + "/api/chat", fake_sleep)
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
    server = await serve(refuse(429, {"error": "quota"}, {"Retry-After": "3600"}))
    chat = AIStream(server.url + "/api/chat", sleep=fake_sleep)
    with pytest.raises(APIStatusError, match="3600 s, more than the 60 s") as info:
        await chat.send("hi")
    assert info.value.status_code == 429 and len(server.requests) == 1
    await chat.aclose()


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_fail_at_once_with_server_message(
    serve: Any, fake_sleep: RecordingSleep, status: int
) -> None:
    server = await serve(refuse(status, {"error": {"message": f"nope {status}", "type": "bad"}}))
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
    server = await serve(refuse(500, {"error": "boom"}))
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
    server = await serve(refuse(502, {"error": "bad gateway"}))
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


async def test_connection_refused_is_retried_then_clear(
    fake_sleep: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "aistream")
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
    assert "--retries in `aistream chat`" in str(info.value)  # the CLI's own flag, named
    assert fake_sleep.delays == [1.0, 2.0]
    await chat.aclose()
    # The logger's name says "aistream"; the messages do not say it again (the trial saw
    # "DEBUG:aistream:aistream: POST ..." with logging.basicConfig).
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("aistream")]
    assert any("attempt failed" in m for m in messages), messages
    assert not [m for m in messages if m.startswith("aistream")]


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
    chat, retries = retrying_chat(server.url + "/api/chat", fake_sleep)
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
    chat, retries = retrying_chat(server.url + "/api/chat", fake_sleep)
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
    chat, retries = retrying_chat(server.url + "/api/chat", fake_sleep)
    reply = await chat.send("hi")
    assert reply.content == "Whole"
    assert [r.resume for r in retries] == [False]
    assert "last-event-id" not in server.requests[1].headers
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
