"""Gemini's RESOURCE_EXHAUSTED / UNAVAILABLE are retried, and RetryInfo.retryDelay is honoured
like Retry-After (API.md §10): in an HTTP error body and in an in-stream error chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aistream import AIStream, APIStatusError, RetryConfig, RetryEvent
from tests.conftest import RecordingSleep
from tests.loopback import Handler, Reply, Request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
TEXT = 'There are **3** "r"s in strawberry.\n\nst**r**awbe**rr**y'


def quota(delay: str) -> dict[str, Any]:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    return {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [retry_info],
        }
    }


def failing_once(first: str, delay: str = "2.5s") -> Handler:
    """The first request fails as `first` says ("http" or "stream"); the next ones succeed."""
    count = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        count["n"] += 1
        if count["n"] == 1 and first == "http":
            await reply.body(429, quota(delay), {"content-type": "application/json"})
            return
        await reply.start()
        if count["n"] == 1:
            await reply.send(
                b'data: {"candidates":[{"content":{"parts":[{"text":"Th"}]}}]}\r\n\r\n'
            )
            await reply.send(b"data: " + json.dumps(quota(delay)).encode() + b"\r\n\r\n")
        else:
            await reply.send((FIXTURES / "gemini" / "text.sse").read_bytes())
        await reply.end()

    return handler


@pytest.mark.parametrize("first", ["http", "stream"])
async def test_retry_delay_is_the_wait_before_the_retry(serve: Any, first: str) -> None:
    server = await serve(failing_once(first))
    sleep = RecordingSleep()
    chat = AIStream(server.url + PATH, retry=RetryConfig(max_retries=2), sleep=sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("How many r in strawberry?")
    await chat.aclose()
    assert reply.content == TEXT
    assert sleep.delays == [2.5]  # the server's delay, never jittered
    assert [(r.delay, r.resume) for r in retries] == [(2.5, False)]
    error = retries[0].error
    assert isinstance(error, APIStatusError)
    assert error.status_code == (200 if first == "stream" else 429)
    assert error.code == ("RESOURCE_EXHAUSTED" if first == "stream" else "429")


@pytest.mark.parametrize("first", ["http", "stream"])
async def test_a_retry_delay_past_a_minute_fails_at_once_saying_so(serve: Any, first: str) -> None:
    server = await serve(failing_once(first, "120s"))
    sleep = RecordingSleep()
    chat = AIStream(server.url + PATH, retry=RetryConfig(max_retries=2), sleep=sleep)
    with pytest.raises(APIStatusError, match="120 s"):
        await chat.send("Hello")
    await chat.aclose()
    assert sleep.delays == []
