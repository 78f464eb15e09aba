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

    options = upstream_options({**OPTIONS, **TOOL_OPTIONS, "top_k": 3}, protocol)
    kind = UPSTREAM_PROTOCOLS[protocol]
    request = ChatRequest((ChatMessage("user", "hi"),), "m", None, options)
    spec = kind.dialect().build_request(kind.endpoint("http://127.0.0.1:1/v1"), request)
    assert b"hi" in spec.body


# --- tool_choice and parallel_tool_calls ------------------------------------------------------

ADD = {"type": "function", "function": {"name": "add"}}
TOOL_OPTIONS = {"tool_choice": ADD, "parallel_tool_calls": False}


@pytest.mark.parametrize(
    ("protocol", "options", "sent"),
    [
        ("openai", TOOL_OPTIONS, TOOL_OPTIONS),
        ("anthropic", {"tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
        ("anthropic", {"tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
        (
            "anthropic",
            TOOL_OPTIONS,
            {"tool_choice": {"type": "tool", "name": "add", "disable_parallel_tool_use": True}},
        ),
        (
            "anthropic",
            {"parallel_tool_calls": False},
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            "responses",
            TOOL_OPTIONS,
            {"tool_choice": {"type": "function", "name": "add"}, "parallel_tool_calls": False},
        ),
        (
            "gemini",
            {"tool_choice": "required"},
            {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
        ),
        (
            "gemini",
            {"tool_choice": ADD},
            {
                "toolConfig": {
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["add"]}
                }
            },
        ),
        (
            "gemini",
            {"tool_choice": "none"},
            {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
        ),
        ("ollama", TOOL_OPTIONS, {}),  # Ollama has no field for either: dropped, with a WARNING
    ],
)
def test_tool_choice_is_written_in_each_upstreams_own_form(
    protocol: str, options: dict[str, Any], sent: dict[str, Any]
) -> None:
    assert upstream_options(options, protocol) == sent


def test_tool_choice_takes_the_responses_form_and_refuses_anything_else() -> None:
    flat = {"tool_choice": {"type": "function", "name": "add"}}
    assert request_options(flat, frozenset()) == {"tool_choice": ADD}
    for bad in ("sometimes", {"type": "function"}, {"type": "function", "name": "x" * 65}, 3):
        with pytest.raises(ValueError, match='"tool_choice" must be "auto"'):
            request_options({"tool_choice": bad}, frozenset())
    with pytest.raises(ValueError, match='"parallel_tool_calls" must be true or false'):
        request_options({"parallel_tool_calls": "no"}, frozenset())


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_tool_choice_reaches_the_upstream_with_tools_and_is_dropped_without(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url, recorder = await relay(serve_app)
    options = {"tool_choice": "required", "parallel_tool_calls": False}
    async with AIStream(url + "/api/chat", tools=[add], options=options) as chat:
        assert (await chat.send("hi")).content == "ok"
    with_tools = recorder.bodies[0]
    assert with_tools["tools"][0]["function"]["name"] == "add"
    assert with_tools["tool_choice"] == "required" and with_tools["parallel_tool_calls"] is False
    async with AIStream(url + "/api/chat", options=options) as chat:
        assert (await chat.send("hi")).content == "ok"
    assert (
        "tool_choice" not in recorder.bodies[1] and "parallel_tool_calls" not in recorder.bodies[1]
    )
    assert any("has no tools to choose from" in r.getMessage() for r in caplog.records)


async def test_tool_choice_reaches_an_anthropic_upstream_in_its_form(serve_app: Any) -> None:
    url, recorder = await relay(serve_app, "anthropic")
    async with AIStream(url + "/api/chat", tools=[add], options={"tool_choice": ADD}) as chat:
        assert (await chat.send("hi")).content == "ok"
    assert recorder.bodies[0]["tool_choice"] == {"type": "tool", "name": "add"}
