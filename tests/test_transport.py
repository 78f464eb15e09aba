"""One attempt over the wire: request bodies, framing and size limits, content types, the
borrowed client, and secrets kept out of reprs, errors and logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from typing import Any

import pytest

from aistream import AIStream, APIStatusError, ProtocolError, RetryConfig, Usage
from tests.helpers import RecordingSleep, stream_handler
from tests.loopback import Reply, Request, native_events, openai_events


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


async def test_shared_client_is_borrowed_not_closed(serve: Any) -> None:
    import httpx

    server = await serve(stream_handler(native_events(["a"])))
    async with httpx.AsyncClient() as client:
        chat = AIStream(server.url + "/api/chat", client=client)
        assert (await chat.send("hi")).content == "a"
        await chat.aclose()
        assert not client.is_closed


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


async def test_a_stall_after_the_last_event_does_not_fail_the_finished_reply(serve: Any) -> None:
    """The body's last bytes (the chunked terminator) are held back after `done`: the reply is
    complete, so a stall_timeout shorter than the drain of the finished body must not fail it
    (it used to, and the resume that followed found nothing after `done`, again and again)."""
    held = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        for event in native_events(["All", " of", " it"]):
            await reply.send(event)
        held.set()
        await asyncio.Event().wait()  # the end of the body never comes

    server = await serve(handler)
    retry = RetryConfig(max_retries=2, initial_delay=0.01, jitter=False)
    async with AIStream(server.url + "/api/chat", stall_timeout=0.05, retry=retry) as chat:
        reply = await asyncio.wait_for(chat.send("hi"), 10)
    assert held.is_set()
    assert reply.content == "All of it" and reply.finish_reason == "stop"
    assert len(server.requests) == 1  # no retry: nothing had failed


_EMFILE_CHILD = """
import asyncio, resource, socket
from aistream import AIStream, ConnectionLostError, RetryConfig
from aistream._pool import ssl_context

async def main() -> None:
    ssl_context()  # loaded before the files run out, as in a process that already streamed
    chat = AIStream("http://127.0.0.1:9/v1/chat/completions", model="m",
                    retry=RetryConfig(max_retries=0))
    try:
        await chat.send("warm up")  # refused: every lazy import done before the files run out
    except ConnectionLostError as exc:
        assert "open-file limit" not in str(exc)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, soft), hard))
    held = []
    try:
        while True:
            held.append(socket.socket())
    except OSError:
        pass
    try:
        await chat.send("hi")
    except ConnectionLostError as exc:
        print("ERROR:", exc)
    finally:
        for s in held:
            s.close()

asyncio.run(main())
"""


def test_running_out_of_file_descriptors_says_to_raise_the_limit() -> None:
    """EMFILE reads as a lost connection; the message must say what actually ran out."""
    out = subprocess.run(
        [sys.executable, "-c", _EMFILE_CHILD], capture_output=True, text=True, timeout=60
    )
    assert "ERROR:" in out.stdout, out.stderr[-2000:]
    assert "open-file limit" in out.stdout and "ulimit -n" in out.stdout, out.stdout
