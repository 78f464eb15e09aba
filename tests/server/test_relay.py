"""The upstream relay against a loopback OpenAI-format server on 127.0.0.1 (real uvicorn)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aistream._wire._events import (
    Done,
    FinishReason,
    ServerError,
    StreamStarted,
    TextDelta,
    UsageReport,
)
from aistream.errors import APIStatusError, ConnectionLostError, ProtocolError, StreamTimeoutError
from aistream.server import UpstreamRelay, create_app
from aistream.server._relay import upstream_error

from .conftest import chat_body, native_events

API_KEY = "sk-test-0123456789secret"


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

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        scenario = body["model"]
        if scenario.startswith("status-"):
            status = int(scenario.removeprefix("status-"))
            error = {"error": {"message": f"upstream says {status}", "type": "server_error"}}
            return JSONResponse(error, status_code=status)
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
    app = create_app(upstream=base + "/v1", api_key=API_KEY, model="ok", heartbeat_interval=None)
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
    ("status", "code", "retryable"),
    [
        (500, "upstream_error", True),
        (503, "upstream_unavailable", True),
        (429, "rate_limited", True),
        (401, "upstream_auth", False),
        (400, "upstream_rejected", False),
    ],
)
async def test_relay_upstream_http_error_becomes_a_native_error_event(
    relay_url: Any, status: int, code: str, retryable: bool
) -> None:
    url, _ = relay_url
    content = await ask(url, model=f"status-{status}")
    error = native_events(content)[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == (code, retryable)
    assert f"HTTP {status}" in error.message and f"upstream says {status}" in error.message
    assert API_KEY not in content.decode()


async def test_relay_in_stream_error_keeps_the_upstream_code(relay_url: Any) -> None:
    url, _ = relay_url
    events = native_events(await ask(url, model="in-stream-error"))
    assert events[1] == TextDelta("Hi", 0)
    error = events[-1]
    assert isinstance(error, ServerError)
    assert error.message == "Context length exceeded"
    assert (error.code, error.retryable) == ("context_length_exceeded", False)


async def test_relay_upstream_cut_mid_stream_is_retryable_unavailable(relay_url: Any) -> None:
    url, _ = relay_url
    events = native_events(await ask(url, model="cut"))
    assert events[1] == TextDelta("Hi", 0)
    error = events[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_relay_unreachable_upstream_is_retryable_unavailable(serve_app: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(upstream=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model="m")
    url = await serve_app(app)
    error = native_events(await ask(url))[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


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
