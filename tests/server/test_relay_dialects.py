"""The relay from Anthropic, Ollama, Responses and Gemini upstreams into every output format
(real uvicorn).

The fake upstreams replay the recorded fixtures (``tests/fixtures/anthropic/*.sse``,
``tests/fixtures/ollama/*.ndjson``, ``responses/*.sse``, ``gemini/*.sse``) on 127.0.0.1, in
small chunks; the request's model picks the fixture. The relay parses them with the client's
own dialects, and each output format is read by its checker from ``test_formats.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import aistream
from aistream.server import UpstreamRelay, create_app
from aistream.server._relay import UPSTREAM_PROTOCOLS

from .helpers import GUARD, chat_body, guard
from .readers import READERS, Reply, finish_in

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
API_KEY = "sk-ant-test-0123456789secret"


class Upstream:
    """Anthropic ``/v1/messages`` and Ollama ``/api/chat`` replaying fixtures by model name.

    Model ``status-<n>`` answers HTTP n with the provider's error body instead.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    async def _replay(
        self, request: Request, folder: str, suffix: str, media: str, model: str | None = None
    ) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, dict(request.headers), body))
        model = model or body.get("model") or ""
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            error: dict[str, Any] = (
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                if folder == "anthropic"
                else {"error": f"model {model!r} not found, try pulling it first"}
            )
            return JSONResponse(error, status_code=status)
        data = (FIXTURES / folder / f"{model}{suffix}").read_bytes()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 97):  # cuts through lines and multibyte text
                yield data[start : start + 97]

        return StreamingResponse(chunks(), media_type=media)

    async def messages(self, request: Request) -> Response:
        return await self._replay(request, "anthropic", ".sse", "text/event-stream")

    async def chat(self, request: Request) -> Response:
        return await self._replay(request, "ollama", ".ndjson", "application/x-ndjson")

    async def responses(self, request: Request) -> Response:
        return await self._replay(request, "responses", ".sse", "text/event-stream")

    async def gemini(self, request: Request) -> Response:
        model, _, method = request.path_params["rest"].partition(":")
        assert method == "streamGenerateContent" and request.query_params["alt"] == "sse"
        return await self._replay(request, "gemini", ".sse", "text/event-stream", model)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/api/chat", self.chat, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1beta/models/{rest}", self.gemini, methods=["POST"]),
            ]
        )


@pytest.fixture
async def upstream(serve_app: Any) -> tuple[str, Upstream]:
    fake = Upstream()
    return await serve_app(fake.app()), fake


async def relay(serve_app: Any, upstream_url: str, protocol: str, **kwargs: Any) -> str:
    app = create_app(upstream=upstream_url, protocol=protocol, heartbeat_interval=None, **kwargs)
    url: str = await serve_app(app)
    return url


async def ask(url: str, model: str, fmt: str, **body: Any) -> bytes:
    async with httpx.AsyncClient(timeout=GUARD) as client:
        response = await client.post(
            f"{url}/api/chat?format={fmt}", json=chat_body("Hello", model=model, **body)
        )
    assert response.status_code == 200
    return response.content


#: What a base URL of each protocol ends with (the others are the host alone).
BASE_PATHS = {"responses": "/v1", "gemini": "/v1beta"}

#: What each fixture must come out as, in every format.
EXPECTED: dict[tuple[str, str], Reply] = {
    ("anthropic", "basic_terminated"): Reply(
        text="Hello there!", usage=(11, 6, 17), finish="stop", ended=True
    ),
    ("anthropic", "thinking"): Reply(
        text="17 × 3 = 51.",
        reasoning="The user asks for 17 × 3. 17 × 3 = 51.",
        usage=(42, 58, 100),
        finish="stop",
        ended=True,
    ),
    ("anthropic", "tool_use"): Reply(
        text="I'll check the current weather in Paris for you.",
        tool_calls=[("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})],
        usage=(377, 65, 442),
        finish="tool_calls",
        ended=True,
    ),
    ("anthropic", "overloaded"): Reply(
        usage=(42, 3, 45), error=("Overloaded", "overloaded_error"), ended=True
    ),
    ("ollama", "basic"): Reply(
        text="The sky is blue.", usage=(26, 282, 308), finish="stop", ended=True
    ),
    ("ollama", "thinking"): Reply(
        text="Hello!",
        reasoning="The user wants a greeting.",
        usage=(18, 27, 45),
        finish="stop",
        ended=True,
    ),
    ("ollama", "tool_calls"): Reply(
        tool_calls=[
            ("call_0", "get_weather", {"city": "Paris"}),
            ("call_1", "get_time", {"tz": "Europe/Paris", "utc_offset": True}),
        ],
        usage=(201, 35, 236),
        finish="tool_calls",
        ended=True,
    ),
    ("responses", "text"): Reply(
        text="The final result is **570**.", usage=(299, 12, 311), finish="stop", ended=True
    ),
    ("responses", "reasoning_tool_call"): Reply(
        reasoning="**Calculating step-by-step**\n\nI'll compute 12 plus 7 with the calculator.",
        tool_calls=[
            ("call_AB6AaRZ1FYZB2RwS6A5vbdqn", "calculator", {"a": 12, "b": 7, "op": "add"})
        ],
        usage=(134, 28, 162),
        finish="tool_calls",
        ended=True,
    ),
    ("responses", "incomplete"): Reply(
        text="Once upon a time", usage=(12, 4, 16), finish="length", ended=True
    ),
    ("responses", "error"): Reply(
        error=(
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
        ),
        ended=True,
    ),
    ("gemini", "thinking"): Reply(
        text="2 + 2 = 4.",
        reasoning="**Adding two numbers**\n\nThe user asks for 2 + 2. That is 4.",
        usage=(14, 92, 106),
        finish="stop",
        ended=True,
    ),
    ("gemini", "tool_call"): Reply(
        tool_calls=[("call_b36LacjwM668nsEP2tbsgQQ_1", "weather", {"location": "San Francisco"})],
        usage=(29, 60, 89),
        finish="tool_calls",
        ended=True,
    ),
    ("gemini", "error"): Reply(
        text="Once upon",
        usage=(8, 2, 10),
        error=("The model is overloaded. Please try again later.", "UNAVAILABLE"),
        ended=True,
    ),
    ("ollama", "error"): Reply(
        text="The sky",
        error=(
            "an error was encountered while running the model: unexpected EOF",
            "upstream_error",
        ),
        ended=True,
    ),
}


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
@pytest.mark.parametrize(("protocol", "fixture"), list(EXPECTED))
async def test_relay_turns_each_upstream_fixture_into_each_output_format(
    serve_app: Any, upstream: tuple[str, Upstream], protocol: str, fixture: str, fmt: str
) -> None:
    upstream_url, _ = upstream
    base = upstream_url + BASE_PATHS.get(protocol, "")
    url = await relay(serve_app, base, protocol, api_key=API_KEY)
    content = await ask(url, fixture, fmt)
    reply = READERS[fmt](content)
    expected = EXPECTED[protocol, fixture]
    assert reply.text == expected.text and reply.reasoning == expected.reasoning
    assert reply.tool_calls == expected.tool_calls
    assert reply.usage == expected.usage
    if expected.error is not None and fmt == "vercel":
        assert reply.finish == "error"  # the UI stream always ends with finish
    else:
        assert reply.finish == (finish_in(fmt, expected.finish) if expected.finish else None)
    if expected.error is None:
        assert reply.error is None
    else:
        assert reply.error is not None and reply.error[0] == expected.error[0]
        if fmt != "vercel":
            assert reply.error[1] == expected.error[1]
    assert reply.ended
    assert API_KEY not in content.decode()


async def test_anthropic_relay_sends_the_messages_api_request(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    upstream_url, fake = upstream
    url = await relay(serve_app, upstream_url, "anthropic", api_key=API_KEY, model="thinking")
    await ask(url, None, "native", systemPrompt="Be brief")  # type: ignore[arg-type]
    path, headers, body = fake.requests[-1]
    assert path == "/v1/messages"
    assert headers["x-api-key"] == API_KEY and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert body["model"] == "thinking" and body["stream"] is True and body["max_tokens"] > 0
    assert body["system"] == "Be brief"
    assert body["messages"] == [{"role": "user", "content": "Hello"}]


async def test_ollama_relay_sends_the_chat_api_request(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    upstream_url, fake = upstream
    url = await relay(serve_app, upstream_url, "ollama", model="basic")
    async with httpx.AsyncClient(timeout=GUARD) as client:  # an OpenAI client's request
        await client.post(
            f"{url}/v1/chat/completions",
            json={
                "messages": [
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": "Hi"},
                ],
                "max_tokens": 5,
                "stream": True,
            },
        )
    path, headers, body = fake.requests[-1]
    assert path == "/api/chat" and "authorization" not in headers
    assert body["model"] == "basic" and body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
    ]
    assert body["options"] == {"num_predict": 5}  # max_tokens, as Ollama names it


async def test_openai_sdk_gets_anthropic_tool_calls_through_the_relay(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    upstream_url, _ = upstream
    url = await relay(serve_app, upstream_url, "anthropic", api_key=API_KEY)
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=GUARD)
    stream = await client.chat.completions.create(
        model="tool_use",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, calls, usage = "", None, [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    await client.close()
    assert text == "I'll check the current weather in Paris for you."
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", '{"location": "Paris"}')
    ]
    assert finish == "tool_calls"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (377, 65)


async def test_aistream_gets_ollama_reasoning_through_the_relay_in_openai_format(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    upstream_url, _ = upstream
    url = await relay(serve_app, upstream_url, "ollama", model="thinking")
    retry = aistream.RetryConfig(max_retries=0)
    async with aistream.AIStream(
        url + "/v1/chat/completions", protocol="openai", retry=retry, timeout=GUARD
    ) as chat:
        reasoning: list[str] = []
        chat.on("reasoning", reasoning.append)
        reply = await guard(chat.send("Say hello"))
    assert reply.content == "Hello!" and "".join(reasoning) == "The user wants a greeting."
    assert reply.usage is not None and reply.usage.total_tokens == 45


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
@pytest.mark.parametrize(
    ("protocol", "status", "code", "answer", "retryable"),
    [
        ("anthropic", 529, "upstream_unavailable", 503, True),
        ("ollama", 404, "upstream_rejected", 502, False),
    ],
)
async def test_upstream_http_errors_before_the_first_event_are_http_statuses_in_each_format(
    serve_app: Any,
    upstream: tuple[str, Upstream],
    protocol: str,
    status: int,
    code: str,
    answer: int,
    retryable: bool,
    fmt: str,
) -> None:
    upstream_url, _ = upstream
    url = await relay(serve_app, upstream_url, protocol, api_key=API_KEY)
    async with httpx.AsyncClient(timeout=GUARD) as client:
        response = await client.post(
            f"{url}/api/chat?format={fmt}", json=chat_body("Hello", model=f"status-{status}")
        )
    assert response.status_code == answer
    error = response.json()  # /api/chat: the native shape whatever the format
    message = error["error"]
    assert f"HTTP {status}" in message
    detail = "Overloaded" if protocol == "anthropic" else "not found, try pulling it first"
    assert detail in message
    assert (error["code"], error["retryable"]) == (code, retryable)
    assert API_KEY not in response.text


async def test_what_the_upstream_dialect_cannot_express_is_logged_not_dropped_silently(
    serve_app: Any, upstream: tuple[str, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    upstream_url, _ = upstream
    url = await relay(serve_app, upstream_url, "anthropic", api_key=API_KEY)
    with caplog.at_level(logging.WARNING, "aistream.server"):
        reply = READERS["vercel"](await ask(url, "forward_compat", "vercel"))
    assert reply.text == "Sunny" and reply.finish == "stop" and reply.usage == (12, 7, 19)
    skipped = [r.getMessage() for r in caplog.records if "skipped an upstream event" in r.message]
    assert len(skipped) == 4, skipped
    assert any("redacted_thinking" in m for m in skipped)
    assert any("server_tool_use" in m for m in skipped)
    assert any("citations_delta" in m for m in skipped)
    assert any("message_annotation" in m for m in skipped)


@pytest.mark.parametrize(
    ("protocol", "upstream_url", "endpoint"),
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://h/v1/chat/completions/", "https://h/v1/chat/completions"),
        ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://proxy/x/v1/messages", "https://proxy/x/v1/messages"),
        ("ollama", "http://localhost:11434", "http://localhost:11434/api/chat"),
        ("ollama", "http://localhost:11434/api", "http://localhost:11434/api/chat"),
        ("ollama", "http://localhost:11434/api/chat", "http://localhost:11434/api/chat"),
        ("ollama", "http://gw/ollama?key=1", "http://gw/ollama/api/chat?key=1"),
        ("responses", "https://api.openai.com/v1", "https://api.openai.com/v1/responses"),
        ("responses", "https://h/v1/responses", "https://h/v1/responses"),
        ("gemini", "https://g/v1beta", "https://g/v1beta"),  # GeminiDialect adds the model
    ],
)
def test_upstream_is_a_base_url_or_the_full_endpoint(
    protocol: str, upstream_url: str, endpoint: str
) -> None:
    assert UPSTREAM_PROTOCOLS[protocol].endpoint(upstream_url) == endpoint
    assert UpstreamRelay(upstream_url, protocol=protocol).endpoint == endpoint


def test_unknown_upstream_protocol_names_the_ones_the_relay_speaks() -> None:
    with pytest.raises(ValueError, match="anthropic, gemini, ollama, openai, responses"):
        create_app(upstream="http://127.0.0.1:1", protocol="native")


def test_anthropic_relay_repr_never_shows_the_key() -> None:
    relay = UpstreamRelay("https://api.anthropic.com", api_key=API_KEY, protocol="anthropic")
    assert API_KEY not in repr(relay)
    assert json.dumps(relay.endpoint) == '"https://api.anthropic.com/v1/messages"'


async def test_gemini_relay_sends_the_model_in_the_path_and_the_key_as_x_goog_api_key(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    upstream_url, fake = upstream
    url = await relay(serve_app, upstream_url + "/v1beta", "gemini", api_key=API_KEY)
    content = await ask(url, "thinking", "native", systemPrompt="Be brief", temperature=0.5)
    assert READERS["native"](content).text == "2 + 2 = 4."
    path, headers, body = fake.requests[-1]
    assert path == "/v1beta/models/thinking:streamGenerateContent"
    assert headers["x-goog-api-key"] == API_KEY and "authorization" not in headers
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief"}]},
        "generationConfig": {"temperature": 0.5},
    }


async def test_responses_relay_sends_instructions_and_drops_what_it_has_no_field_for(
    serve_app: Any, upstream: tuple[str, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    upstream_url, fake = upstream
    url = await relay(serve_app, upstream_url + "/v1", "responses", api_key=API_KEY)
    with caplog.at_level(logging.WARNING, "aistream.server"):
        await ask(url, "text", "native", systemPrompt="Be brief", max_tokens=9, seed=1)
    path, headers, body = fake.requests[-1]
    assert path == "/v1/responses" and headers["authorization"] == f"Bearer {API_KEY}"
    assert body == {
        "model": "text",
        "instructions": "Be brief",
        "input": [{"role": "user", "content": "Hello"}],
        "max_output_tokens": 9,
        "stream": True,
    }
    assert "'seed'" in caplog.text


async def test_gemini_thought_signature_goes_round_trip_through_the_relay(
    serve_app: Any, upstream: tuple[str, Upstream]
) -> None:
    """Gemini 3 refuses a replayed functionCall without its thoughtSignature: the native
    protocol carries it to the client (tool-call ``signature``) and back (``toolCalls``)."""
    upstream_url, fake = upstream
    url = await relay(serve_app, upstream_url + "/v1beta", "gemini", model="tool_call")
    chat = aistream.AIStream(url + "/api/chat", retry=aistream.RetryConfig(max_retries=0))
    first = await chat.send("Weather in San Francisco?")
    await chat.aclose()
    [call] = first.tool_calls
    assert call.signature == "EqUCCqICAb4+9vt0c2lnbmF0dXJlIGZvciB0aGUgZnVuY3Rpb24gY2FsbA=="
    calls = [{"id": call.id, "name": call.name, "arguments": call.arguments}]
    body = chat_body("Weather in San Francisco?")
    body["messages"] += [
        {
            "role": "assistant",
            "content": "",
            "toolCalls": [{**calls[0], "signature": call.signature}],
        },
        {"role": "tool", "toolCallId": call.id, "content": '{"temperature": 18}'},
    ]
    async with httpx.AsyncClient(timeout=GUARD) as client:
        response = await client.post(f"{url}/api/chat", json=body)
    assert response.status_code == 200
    _, _, sent = fake.requests[-1]
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "weather", "args": {"location": "San Francisco"}},
                "thoughtSignature": call.signature,
            }
        ],
    }
    assert sent["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "weather",
        "response": {"output": {"temperature": 18}},
    }
