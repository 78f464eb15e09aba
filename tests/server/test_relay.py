"""The upstream relay against a loopback OpenAI-format server on 127.0.0.1 (real uvicorn)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aistream import AIStream, RetryConfig, RetryEvent
from aistream._wire._events import (
    Done,
    FinishReason,
    ServerError,
    StreamStarted,
    TextDelta,
    UsageReport,
)
from aistream.errors import APIStatusError, ConnectionLostError, ProtocolError, StreamTimeoutError
from aistream.server import Policy, UpstreamRelay, create_app
from aistream.server._relay import upstream_error

from .helpers import chat_body, native_events

API_KEY = "sk-test-0123456789secret"
GUARD = 30  # seconds: a bound, never a wait


def chunk(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def delta(content: str) -> bytes:
    return chunk(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
    )


FINISH = chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = chunk(
    {"choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16}}
)
DONE = b"data: [DONE]\n\n"


class Upstream:
    """An OpenAI-compatible /v1/chat/completions; the request's model picks the scenario."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.hold = 0  # "held": no reply starts before this many such requests are in
        self.held = 0
        self.all_held = asyncio.Event()

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        scenario = body["model"]
        if scenario == "held":
            self.held += 1
            if self.held == self.hold:
                self.all_held.set()
            await asyncio.wait_for(self.all_held.wait(), GUARD)
            scenario = "ok"
        if scenario.startswith("status-"):
            status = int(scenario.removeprefix("status-"))
            error = {"error": {"message": f"upstream says {status}", "type": "server_error"}}
            busy = {"Retry-After": "7"} if status in (429, 503) else None
            return JSONResponse(error, status_code=status, headers=busy)
        parts = {
            "ok": [delta("Hel"), delta("lo"), FINISH, USAGE, DONE],
            "in-stream-error": [
                delta("Hi"),
                chunk(
                    {
                        "error": {
                            "message": "Context length exceeded",
                            "code": "context_length_exceeded",
                        }
                    }
                ),
            ],
            "cut": [delta("Hi")],  # ends without [DONE]: a dropped stream
        }[scenario]

        async def stream() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


@pytest.fixture
async def relay_url(serve_app: Any) -> tuple[str, Upstream]:
    upstream = Upstream()
    base = await serve_app(upstream.app())
    app = create_app(
        upstream=base + "/v1",
        api_key=API_KEY,
        model="ok",
        heartbeat_interval=None,
        policy=Policy(allow_client_model=True),  # the request's model picks the scenario
    )
    return await serve_app(app), upstream


async def ask(url: str, **body: Any) -> bytes:
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/api/chat", json=chat_body("Hello", **body))
    assert response.status_code == 200
    return response.content


async def test_relay_streams_tokens_and_passes_usage_through(relay_url: Any) -> None:
    url, upstream = relay_url
    content = await ask(url, systemPrompt="Be brief")
    events = native_events(content)
    assert isinstance(events[0], StreamStarted) and events[0].model == "ok"
    assert events[1:] == [
        TextDelta("Hel", 0),
        TextDelta("lo", 1),
        UsageReport(14, 2, 16),
        FinishReason("stop"),
        Done(),
    ]
    headers, body = upstream.requests[0]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hello"},
    ]


@pytest.mark.parametrize(
    ("status", "answer", "code", "retryable", "retry_after"),
    [
        (500, 502, "upstream_error", True, None),
        (503, 503, "upstream_unavailable", True, "7"),
        (429, 429, "rate_limited", True, "7"),
        (401, 502, "upstream_auth", False, None),
        (400, 400, "upstream_rejected", False, None),
    ],
)
async def test_relay_upstream_http_error_before_the_first_event_is_an_http_status(
    relay_url: Any, status: int, answer: int, code: str, retryable: bool, retry_after: str | None
) -> None:
    url, _ = relay_url
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url + "/api/chat", json=chat_body("Hello", model=f"status-{status}")
        )
        v1 = await client.post(
            url + "/v1/chat/completions",
            json={
                "model": f"status-{status}",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            },
        )
    assert response.status_code == answer == v1.status_code
    assert response.headers.get("retry-after") == retry_after == v1.headers.get("retry-after")
    body = response.json()  # the native shape on /api/chat
    assert (body["code"], body["retryable"]) == (code, retryable)
    error = v1.json()["error"]  # OpenAI's shape on /v1/...
    assert (error["code"], error["retryable"]) == (code, retryable)
    if status == 401:  # the operator's problem: callers get no detail to learn from (F14)
        assert "server's configuration" in body["error"] and "api_key" not in body["error"]
        assert f"upstream says {status}" not in body["error"] + error["message"]
    else:
        assert f"HTTP {status}" in body["error"] and f"upstream says {status}" in body["error"]
        assert f"upstream says {status}" in error["message"]
    assert API_KEY not in response.text + v1.text


async def test_relay_refused_key_fails_every_client_with_its_own_error_class(
    relay_url: Any,
) -> None:
    url, _ = relay_url
    retry = RetryConfig(max_retries=3, initial_delay=0, max_delay=0)
    async with AIStream(url + "/api/chat", model="status-401", retry=retry) as chat:
        retries: list[RetryEvent] = []
        chat.on("retry", retries.append)
        with pytest.raises(APIStatusError) as caught:
            await chat.send("hi")
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth"
    assert retries == []  # retryable: false is honoured
    oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as oai_caught:
        await oai.chat.completions.create(
            model="status-401", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    await oai.close()
    assert oai_caught.value.status_code == 502
    oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(
            model="status-429", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    await oai.close()


async def test_relay_in_stream_error_keeps_the_upstream_code(relay_url: Any) -> None:
    url, _ = relay_url
    events = native_events(await ask(url, model="in-stream-error"))
    assert events[1] == TextDelta("Hi", 0)
    error = events[-1]
    assert isinstance(error, ServerError)
    assert error.message == "Context length exceeded"
    assert (error.code, error.retryable) == ("context_length_exceeded", False)


async def test_relay_holds_more_upstream_streams_at_once_than_httpx_pools_allow(
    serve_app: Any,
) -> None:
    """120 relayed replies open at once: the relay's pool has no connection limit (the app's
    Limits bound the streams), where httpx's default 100 would queue 20 behind the rest."""
    upstream = Upstream()
    upstream.hold = 120
    base = await serve_app(upstream.app())
    app = create_app(upstream=base + "/v1", api_key=API_KEY, model="held", heartbeat_interval=None)
    url = await serve_app(app)
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=GUARD) as client:

        async def one() -> bytes:
            response = await client.post(url + "/api/chat", json=chat_body("Hello"))
            assert response.status_code == 200
            return response.content

        replies = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(120))), GUARD)
    assert all(TextDelta("lo", 1) in native_events(reply) for reply in replies)
    assert upstream.held == 120


async def test_relay_upstream_cut_mid_stream_is_retryable_unavailable(relay_url: Any) -> None:
    url, _ = relay_url
    events = native_events(await ask(url, model="cut"))
    assert events[1] == TextDelta("Hi", 0)
    error = events[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_relay_unreachable_upstream_is_a_502_not_worth_retrying(serve_app: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(upstream=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model="m")
    url = await serve_app(app)
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/api/chat", json=chat_body("Hello"))
    assert response.status_code == 502
    body = response.json()
    assert (body["code"], body["retryable"]) == ("upstream_unreachable", False)
    assert "upstream URL" in body["error"]


@pytest.mark.parametrize("upstream", ["ftp://x", "x", "127.0.0.1:8000/v1", "http://"])
def test_relay_refuses_an_upstream_that_is_not_an_http_url(upstream: str) -> None:
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        create_app(upstream=upstream)


def test_relay_rejects_a_protocol_it_does_not_speak_yet() -> None:
    with pytest.raises(ValueError, match="openai"):
        create_app(upstream="http://127.0.0.1:1/v1", protocol="carrier-pigeon")


def test_relay_repr_never_shows_the_key() -> None:
    relay = UpstreamRelay("https://api.example.com/v1/", api_key=API_KEY)
    assert relay.endpoint == "https://api.example.com/v1/chat/completions"
    assert API_KEY not in repr(relay)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (StreamTimeoutError("silent"), "upstream_timeout", True),
        (ConnectionLostError("cut"), "upstream_unavailable", True),
        (ProtocolError("garbage"), "upstream_protocol_error", False),
        (APIStatusError("x", status_code=408), "upstream_timeout", True),
        (APIStatusError("x", status_code=529), "upstream_unavailable", True),
    ],
)
def test_upstream_error_codes_by_kind(error: Any, code: str, retryable: bool) -> None:
    mapped = upstream_error(error)
    assert (mapped.code, mapped.retryable) == (code, retryable)
