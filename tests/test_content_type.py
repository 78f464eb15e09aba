"""The response's content type decides the framing: a protocol mismatch fails at once, clearly."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from aistream import AIStream, ProtocolError, RetryConfig
from tests.helpers import RecordingSleep
from tests.loopback import Handler, Reply, Request, native_events

OLLAMA_LINES = [
    json.dumps({"message": {"role": "assistant", "content": "Hi"}, "done": False}).encode() + b"\n",
    json.dumps({"message": {"role": "assistant", "content": ""}, "done": True}).encode() + b"\n",
]


def answering(chunks: list[bytes], content_type: str) -> Handler:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(headers={"content-type": content_type})
        for chunk in chunks:
            await reply.send(chunk)
        await reply.end()

    return handler


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/x-ndjson; charset=utf-8"]
)
async def test_ndjson_under_auto_is_a_protocol_error_naming_ollama_without_retries(
    serve: Callable[[Handler], Any], fake_sleep: RecordingSleep, content_type: str
) -> None:
    server = await serve(answering(OLLAMA_LINES, content_type))
    chat = AIStream(server.url + "/api/chat", retry=RetryConfig(max_retries=3), sleep=fake_sleep)
    with pytest.raises(ProtocolError, match="protocol='ollama'"):
        await chat.send("hi")
    assert len(server.requests) == 1 and fake_sleep.delays == []
    await chat.aclose()


async def test_sse_under_ollama_is_a_protocol_error_naming_native_without_log_flood(
    serve: Callable[[Handler], Any],
    fake_sleep: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "aistream")
    server = await serve(answering(native_events(["a"] * 50), "text/event-stream"))
    chat = AIStream(server.url + "/api/chat", protocol="ollama", sleep=fake_sleep)
    with pytest.raises(ProtocolError, match="protocol='native'"):
        await chat.send("hi")
    assert len(server.requests) == 1 and fake_sleep.delays == []
    assert [r for r in caplog.records if "skipped" in r.getMessage()] == []
    await chat.aclose()


async def test_matching_content_types_still_stream(serve: Callable[[Handler], Any]) -> None:
    ollama = await serve(answering(OLLAMA_LINES, "application/x-ndjson"))
    native = await serve(answering(native_events(["a", "b"]), "text/event-stream"))
    async with AIStream(ollama.url + "/api/chat", protocol="ollama") as chat:
        assert (await chat.send("hi")).content == "Hi"
    async with AIStream(native.url + "/api/chat") as chat:
        assert (await chat.send("hi")).content == "ab"
