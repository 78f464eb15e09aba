"""AIStream end to end over the anthropic and ollama dialects, against loopback servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aistream import AIStream, APIStatusError, RetryConfig, RetryEvent, ToolCall, Usage
from tests.helpers import RecordingSleep
from tests.loopback import Handler, Reply, Request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NDJSON = {"content-type": "application/x-ndjson"}


def replaying(*names: str, headers: dict[str, str] | None = None) -> Handler:
    """Serve the fixtures in order, one per request."""
    bodies = [(FIXTURES / name).read_bytes() for name in names]
    count = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        body = bodies[min(count["n"], len(bodies) - 1)]
        count["n"] += 1
        await reply.start(headers=headers)
        await reply.send(body)
        await reply.end()

    return handler


def record(chat: AIStream) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"token": [], "reasoning": [], "tool-call": [], "usage": []}
    for name, items in seen.items():
        chat.on(name, items.append)
    return seen


# --- anthropic -------------------------------------------------------------------------------


async def test_anthropic_conversation_streams_reasoning_text_tools_and_usage(serve: Any) -> None:
    server = await serve(replaying("anthropic/thinking.sse", "anthropic/tool_use.sse"))
    chat = AIStream(
        server.url + "/v1/messages",
        protocol="anthropic",
        model="claude-sonnet-4-5",
        headers={"x-api-key": "sk-ant-secret"},
        system_prompt="Be brief.",
        options={"max_tokens": 256},
        retry=RetryConfig(max_retries=0),
    )
    seen = record(chat)

    first = await chat.send("What is 17 × 3?")
    assert first.content == "17 × 3 = 51."
    assert first.reasoning == "The user asks for 17 × 3. 17 × 3 = 51."
    assert first.finish_reason == "stop"
    assert first.usage == Usage(prompt_tokens=42, completion_tokens=58, total_tokens=100)
    assert seen["reasoning"] == ["The user asks for 17 × 3.", " 17 × 3 = 51."]
    assert seen["token"] == ["17 × 3", " = 51."]

    second = await chat.send("Weather in Paris?")
    await chat.aclose()
    call = ToolCall(
        id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather", arguments='{"location": "Paris"}'
    )
    assert seen["tool-call"] == [call]
    assert second.tool_calls == [call] and second.finish_reason == "tool_calls"
    assert second.content == "I'll check the current weather in Paris for you."
    history = chat.messages
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].reasoning == first.reasoning
    assert history[3].tool_calls == [call]
    assert chat.usage == Usage(prompt_tokens=42 + 377, completion_tokens=58 + 65)
    assert seen["usage"][-1] == chat.usage

    request = server.requests[1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["x-api-key"] == "sk-ant-secret"
    assert request.json() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [
            {"role": "user", "content": "What is 17 × 3?"},
            {"role": "assistant", "content": "17 × 3 = 51."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "system": "Be brief.",
        "stream": True,
    }


async def test_anthropic_is_detected_from_the_messages_path(serve: Any) -> None:
    server = await serve(replaying("anthropic/basic_terminated.sse"))
    chat = AIStream(server.url + "/v1/messages", retry=RetryConfig(max_retries=0))
    reply = await chat.send("Hi")
    await chat.aclose()
    assert reply.content == "Hello there!"
    assert server.requests[0].json()["max_tokens"] == 4096


async def test_anthropic_non_transient_error_fails_the_turn_at_once(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        error = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'
        await reply.send(b"event: error\ndata: " + error + b"\n\n")
        await reply.end()

    server = await serve(handler)
    chat = AIStream(server.url + "/v1/messages", protocol="anthropic", sleep=RecordingSleep())
    errors: list[Exception] = []
    chat.on("error", errors.append)
    with pytest.raises(APIStatusError) as caught:
        await chat.send("Hi")
    await chat.aclose()
    assert caught.value.code == "invalid_request_error" and not caught.value.retryable
    assert len(server.requests) == 1 and errors == [caught.value]


# --- ollama ----------------------------------------------------------------------------------


async def test_ollama_conversation_streams_reasoning_text_tools_and_usage(serve: Any) -> None:
    server = await serve(
        replaying("ollama/thinking.ndjson", "ollama/tool_calls_ids.ndjson", headers=NDJSON)
    )
    chat = AIStream(
        server.url + "/api/chat",
        protocol="ollama",
        model="qwen3:8b",
        system_prompt="Be brief.",
        options={"temperature": 0, "think": True},
        retry=RetryConfig(max_retries=0),
    )
    seen = record(chat)

    first = await chat.send("Say hello")
    assert first.content == "Hello!"
    assert first.reasoning == "The user wants a greeting."
    assert first.finish_reason == "stop"
    assert first.usage == Usage(prompt_tokens=18, completion_tokens=27, total_tokens=45)
    assert seen["reasoning"] == ["The user", " wants a greeting."]
    assert seen["token"] == ["Hello", "!"]

    second = await chat.send("Weather in Zürich?")
    await chat.aclose()
    call = ToolCall(id="call_k3v9x2mq", name="get_weather", arguments='{"city":"Zürich"}')
    assert seen["tool-call"] == [call]
    assert second.tool_calls == [call] and second.finish_reason == "tool_calls"
    assert second.reasoning == "Need the weather tool." and second.content == ""
    history = chat.messages
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].reasoning == "The user wants a greeting."
    assert history[3].tool_calls == [call]
    assert chat.usage == Usage(prompt_tokens=18 + 150, completion_tokens=27 + 22)

    request = server.requests[1]
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "qwen3:8b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Weather in Zürich?"},
        ],
        "think": True,
        "options": {"temperature": 0},
        "stream": True,
    }


async def test_ollama_reply_without_final_newline_completes(serve: Any) -> None:
    server = await serve(replaying("ollama/no_final_newline.ndjson", headers=NDJSON))
    chat = AIStream(server.url + "/api/chat", protocol="ollama", retry=RetryConfig(max_retries=0))
    reply = await chat.send("Why is the sky blue?")
    await chat.aclose()
    assert reply.content == "The sky is blue." and reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=26, completion_tokens=282, total_tokens=308)


async def test_ollama_transient_error_restarts_the_reply(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    server = await serve(
        replaying("ollama/error_transient.ndjson", "ollama/basic.ndjson", headers=NDJSON)
    )
    chat = AIStream(
        server.url + "/api/chat",
        protocol="ollama",
        retry=RetryConfig(max_retries=1, jitter=False),
        sleep=fake_sleep,
    )
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("Why is the sky blue?")
    await chat.aclose()
    assert reply.content == "The sky is blue."  # the partial "Hi" was discarded
    assert [r.resume for r in retries] == [False]
    assert len(server.requests) == 2


async def test_ollama_model_crash_error_fails_without_retry(serve: Any) -> None:
    server = await serve(replaying("ollama/error.ndjson", headers=NDJSON))
    chat = AIStream(server.url + "/api/chat", protocol="ollama", sleep=RecordingSleep())
    with pytest.raises(APIStatusError, match="unexpected EOF") as caught:
        await chat.send("Why is the sky blue?")
    await chat.aclose()
    assert not caught.value.retryable
    assert len(server.requests) == 1
