"""The relay forwards the known sampling options in the upstream's fields and names what it drops.

Real uvicorn on 127.0.0.1 for the relay and for a recording upstream (OpenAI or Anthropic shape).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aistream import AIStream
from aistream.server import create_app
from aistream.server._options import request_options, upstream_options

from .helpers import chat_body

OPTIONS = {
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 5,
    "stop": ["END"],
    "seed": 7,
    "response_format": {"type": "json_object"},
    "presence_penalty": 0.1,
    "frequency_penalty": 0.3,
}


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


OPENAI_REPLY = [
    _sse({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}),
    b"data: [DONE]\n\n",
]
ANTHROPIC_REPLY = [
    _sse({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}, "message_start"),
    _sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
        "content_block_delta",
    ),
    _sse(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
        "message_delta",
    ),
    _sse({"type": "message_stop"}, "message_stop"),
]


class Recorder:
    """An upstream that records each request body and answers "ok"."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def answer(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        parts = ANTHROPIC_REPLY if request.url.path.endswith("/messages") else OPENAI_REPLY

        async def stream() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.answer, methods=["POST"]),
                Route("/v1/messages", self.answer, methods=["POST"]),
            ]
        )


async def relay(serve_app: Any, protocol: str = "openai") -> tuple[str, Recorder]:
    recorder = Recorder()
    base = await serve_app(recorder.app())
    app = create_app(upstream=base + "/v1", protocol=protocol, model="m", heartbeat_interval=None)
    return await serve_app(app), recorder


async def test_aistream_options_reach_an_openai_upstream_through_api_chat(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url, recorder = await relay(serve_app)
    async with AIStream(url + "/api/chat", options={**OPTIONS, "logprobs": True}) as chat:
        reply = await chat.send("hi")
    assert reply.content == "ok"
    body = recorder.bodies[0]
    assert {k: body[k] for k in OPTIONS} == OPTIONS
    assert "logprobs" not in body
    dropped = [r.getMessage() for r in caplog.records if "does not forward" in r.getMessage()]
    assert len(dropped) == 1 and "'logprobs'" in dropped[0]


async def test_options_reach_an_anthropic_upstream_in_its_own_fields(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url, recorder = await relay(serve_app, "anthropic")
    body = chat_body("hi", temperature=0.5, stop="END", max_completion_tokens=9, seed=3)
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/api/chat", json=body)
    assert response.status_code == 200 and b'"ok"' in response.content
    sent = recorder.bodies[0]
    assert sent["temperature"] == 0.5
    assert sent["stop_sequences"] == ["END"] and "stop" not in sent
    assert sent["max_tokens"] == 9
    assert "seed" not in sent
    assert any(
        "anthropic upstream has no field for: 'seed'" in r.getMessage() for r in caplog.records
    )


async def test_openai_endpoint_forwards_the_same_options(serve_app: Any) -> None:
    url, recorder = await relay(serve_app)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        **OPTIONS,
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert {k: recorder.bodies[0][k] for k in OPTIONS} == OPTIONS


@pytest.mark.parametrize(("path", "status"), [("/api/chat", 422), ("/v1/chat/completions", 400)])
@pytest.mark.parametrize(
    "bad",
    [{"temperature": "hot"}, {"max_tokens": 0}, {"stop": [""]}, {"seed": 1.5}, {"top_p": True}],
)
async def test_a_known_option_of_the_wrong_type_is_refused_before_anything_starts(
    serve_app: Any, path: str, status: int, bad: dict[str, Any]
) -> None:
    url, recorder = await relay(serve_app)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, **bad}
    async with httpx.AsyncClient() as client:
        response = await client.post(url + path, json=body)
    assert response.status_code == status
    assert next(iter(bad)) in response.text
    assert recorder.bodies == []


async def test_demo_model_honours_max_tokens(serve_app: Any) -> None:
    url = await serve_app(create_app(heartbeat_interval=None))
    async with AIStream(url + "/api/chat", options={"max_tokens": 3}) as chat:
        reply = await chat.send("Tell me a long story.")
    assert reply.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_request_options_names_every_dropped_field_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aistream.server")
    body = {"messages": [], "temperature": 0, "user": "u", "logprobs": True, "x" * 500: 1}
    assert request_options(body, frozenset({"messages"})) == {"temperature": 0}
    (record,) = caplog.records
    assert "'user'" in record.getMessage() and "'logprobs'" in record.getMessage()
    assert "x" * 41 not in record.getMessage()  # untrusted names are cut short in the log


def test_upstream_options_for_ollama_map_response_format() -> None:
    assert upstream_options({"response_format": {"type": "json_object"}}, "ollama") == {
        "format": "json"
    }


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama", "responses", "gemini"])
def test_every_upstream_dialect_builds_a_request_from_every_known_option(protocol: str) -> None:
    """What upstream_options keeps, the upstream's dialect can write (never a ValueError)."""
    from aistream._wire._dialect import ChatMessage, ChatRequest
    from aistream.server._relay import UPSTREAM_PROTOCOLS

    options = upstream_options({**OPTIONS, "top_k": 3}, protocol)
    kind = UPSTREAM_PROTOCOLS[protocol]
    request = ChatRequest((ChatMessage("user", "hi"),), "m", None, options)
    spec = kind.dialect().build_request(kind.endpoint("http://127.0.0.1:1/v1"), request)
    assert b"hi" in spec.body
