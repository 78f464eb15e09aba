"""The server and tools (API.md §5): requests with tools, tool results and images are read,
checked and bounded; the demo model calls tools; the relay carries them upstream; every output
format writes tool calls (the openai SDK reads ours). Real uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aistream._wire._dialect import ChatMessage, ChatRequest, ToolSpec
from aistream._wire._events import FinishReason, ServerError, TextDelta, ToolCallDone
from aistream.server import create_app
from aistream.server._demo import DemoModel

from .helpers import frames, native_events

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 3},
        },
        "required": ["city", "unit", "days"],
    },
}
TIME = {
    "name": "get_time",
    "description": "The time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8)).decode()


@pytest.fixture
async def demo_url(serve_app: Any) -> str:
    app = create_app(demo_tokens_per_second=None, heartbeat_interval=None)
    return str(await serve_app(app))


async def post(url: str, body: dict[str, Any], path: str = "/api/chat") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url + path, json=body)


def calls_of(content: bytes) -> list[ToolCallDone]:
    return [e for e in native_events(content) if isinstance(e, ToolCallDone)]


def text_of(content: bytes) -> str:
    return "".join(e.text for e in native_events(content) if isinstance(e, TextDelta))


# --- the demo model --------------------------------------------------------------------------


def test_demo_calls_the_tools_the_last_user_message_names_with_schema_arguments() -> None:
    demo = DemoModel(tokens_per_second=None)
    tools = tuple(ToolSpec(t["name"], t["description"], t["parameters"]) for t in (WEATHER, TIME))
    request = ChatRequest(
        (ChatMessage("user", "Use get_time and get_weather for Paris, please"),), tools=tools
    )
    calls = demo.tool_calls(request)
    assert [c.name for c in calls] == ["get_time", "get_weather"]  # in the order they are named
    weather = json.loads(calls[1].arguments)
    assert weather["city"] == "Paris" and weather["unit"] == "celsius"
    assert 1 <= weather["days"] <= 3
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert demo.tool_calls(request) == calls  # the same conversation, the same calls
    assert len({c.id for c in calls}) == 2
    unnamed = ChatRequest((ChatMessage("user", "weather please"),), tools=tools)
    assert demo.tool_calls(unnamed) == []
    prefix = ChatRequest((ChatMessage("user", "get_weathers"),), tools=tools)
    assert demo.tool_calls(prefix) == []  # the exact name, as a word


async def test_demo_tool_loop_over_the_native_protocol(demo_url: str) -> None:
    ask = {"role": "user", "content": "What does get_weather say for Paris?"}
    first = await post(demo_url, {"messages": [ask], "tools": [WEATHER]})
    assert first.status_code == 200
    [call] = calls_of(first.content)
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] == "Paris"
    assert FinishReason("tool_calls") in native_events(first.content)
    assert text_of(first.content) == ""
    result = '{"temperature": 21}'
    messages = [
        ask,
        {
            "role": "assistant",
            "content": "",
            "toolCalls": [{"id": call.id, "name": call.name, "arguments": call.arguments}],
        },
        {"role": "tool", "toolCallId": call.id, "content": result},
    ]
    second = await post(demo_url, {"messages": messages, "tools": [WEATHER]})
    assert second.status_code == 200
    assert text_of(second.content).startswith(f"The get_weather tool returned: {result}")
    assert calls_of(second.content) == []


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(
            {"messages": [{"role": "tool", "toolCallId": "x", "content": "r"}]},
            "not a call of the assistant message before it",
            id="result-without-call",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "toolCalls": [{"id": "a", "name": "f"}]},
                    {"role": "user", "content": "between"},
                    {"role": "tool", "toolCallId": "a", "content": "r"},
                ]
            },
            "not a call of the assistant message before it",
            id="result-after-a-user-message",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "assistant", "content": "", "toolCalls": [{"id": "a", "name": "f"}]},
                    {"role": "tool", "toolCallId": "a", "content": "r"},
                    {"role": "tool", "toolCallId": "a", "content": "again"},
                ]
            },
            "already answered",
            id="answered-twice",
        ),
        pytest.param(
            {"messages": [{"role": "tool", "content": "r"}]},
            "without toolCallId",
            id="tool-without-id",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q", "images": [{"data": "%%%"}]}]},
            "not valid base64",
            id="bad-base64",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q", "images": [{"data": PNG_B64}]}]},
            "media type",
            id="image-without-type",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q", "images": [{"url": "file:///x"}]}]},
            "http",
            id="file-url",
        ),
        pytest.param(
            {"messages": [{"role": "assistant", "content": "a", "images": [{"url": "http://x"}]}]},
            "belongs to user messages",
            id="image-on-assistant",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q"}], "tools": [{"name": "bad name"}]},
            "letters, digits",
            id="bad-tool-name",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q"}], "tools": [WEATHER, WEATHER]},
            "twice",
            id="duplicate-tool",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "q"}], "tools": [TIME] * 129},
            "at most 128",
            id="too-many-tools",
        ),
        pytest.param(
            {
                "messages": [{"role": "user", "content": "q"}],
                "tools": [{"name": "f", "parameters": {"type": "string"}}],
            },
            "JSON Schema object",
            id="schema-not-an-object",
        ),
    ],
)
async def test_bad_tool_and_image_parts_are_refused_with_what_to_send(
    demo_url: str, body: dict[str, Any], match: str
) -> None:
    response = await post(demo_url, body)
    assert response.status_code == 422
    assert match in response.json()["error"]


# --- the OpenAI format and the openai SDK ----------------------------------------------------


def openai_tool(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": spec}


async def test_openai_sdk_reads_our_tool_calls_and_sends_the_results_back(demo_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=demo_url + "/v1", api_key="unused", max_retries=0)
    async with client:
        question = {"role": "user", "content": "get_time and get_weather in Lyon?"}
        tools = [openai_tool(WEATHER), openai_tool(TIME)]
        stream = await client.chat.completions.create(
            model="demo",
            messages=[question],
            tools=tools,
            stream=True,  # type: ignore[list-item]
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += delta.id or ""
                slot["name"] += (delta.function and delta.function.name) or ""
                slot["arguments"] += (delta.function and delta.function.arguments) or ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert finish == "tool_calls"
        assert [calls[i]["name"] for i in sorted(calls)] == ["get_time", "get_weather"]
        assert json.loads(calls[1]["arguments"])["city"] == "Lyon"

        whole = await client.chat.completions.create(
            model="demo",
            messages=[question],
            tools=tools,  # type: ignore[list-item]
        )
        message = whole.choices[0].message
        assert whole.choices[0].finish_reason == "tool_calls"
        assert [
            (c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []
        ] == [(calls[i]["id"], calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)]

        history: list[Any] = [question, message.model_dump(exclude_none=True)]
        history += [
            {"role": "tool", "tool_call_id": c.id, "content": f"{c.function.name} ok"}
            for c in message.tool_calls or []
        ]
        answer = await client.chat.completions.create(
            model="demo",
            messages=history,
            tools=tools,  # type: ignore[list-item]
        )
        assert answer.choices[0].finish_reason == "stop"
        assert (answer.choices[0].message.content or "").startswith(
            "The get_time tool returned: get_time ok The get_weather tool returned: get_weather ok"
        )


async def test_openai_body_with_images_and_a_stray_tool_result_is_checked(demo_url: str) -> None:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    ok = {"model": "demo", "messages": [{"role": "user", "content": [image]}], "stream": True}
    assert (await post(demo_url, ok, "/v1/chat/completions")).status_code == 200
    stray = {"model": "demo", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}
    response = await post(demo_url, stray, "/v1/chat/completions")
    assert response.status_code == 400
    assert "not a call of the assistant message" in response.json()["error"]["message"]


async def test_vercel_format_writes_the_demo_tool_call(demo_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "get_time?"}], "tools": [TIME]}
    async with httpx.AsyncClient() as client:
        response = await client.post(demo_url + "/api/chat?format=vercel", json=body)
    parts = [json.loads(f.data) for f in frames(response.content) if f.data != "[DONE]"]
    [call] = [p for p in parts if p["type"] == "tool-input-available"]
    assert call["toolName"] == "get_time" and isinstance(call["input"], dict)
    finish = parts[-1]
    assert (finish["type"], finish["messageMetadata"]["finishReason"]) == ("finish", "tool-calls")


# --- the relay -------------------------------------------------------------------------------


class RecordingUpstream:
    """An upstream that records each body and answers with one text delta."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]

        async def stream() -> Any:
            for c in chunks:
                yield f"data: {json.dumps(c)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self, path: str) -> Starlette:
        return Starlette(routes=[Route(path, self.handle, methods=["POST"])])


async def test_relay_sends_tools_results_and_images_in_the_upstream_dialect(
    serve_app: Any,
) -> None:
    upstream = RecordingUpstream()
    base = await serve_app(upstream.app("/v1/chat/completions"))
    app = create_app(upstream=base + "/v1", model="m", heartbeat_interval=None)
    url = await serve_app(app)
    body = {
        "messages": [
            {"role": "user", "content": "q", "images": [{"url": "https://x.test/a.png"}]},
            {
                "role": "assistant",
                "content": "",
                "toolCalls": [{"id": "c1", "name": "get_time", "arguments": '{"city":"Oslo"}'}],
            },
            {"role": "tool", "toolCallId": "c1", "content": "noon"},
        ],
        "tools": [TIME],
    }
    response = await post(url, body)
    assert text_of(response.content) == "ok"
    [sent] = upstream.bodies
    assert sent["tools"] == [openai_tool(TIME)]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "q"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
    ]


async def test_relay_refuses_what_its_upstream_cannot_carry(serve_app: Any) -> None:
    upstream = RecordingUpstream()
    base = await serve_app(upstream.app("/api/chat"))
    app = create_app(upstream=base, protocol="ollama", model="m", heartbeat_interval=None)
    url = await serve_app(app)
    body = {"messages": [{"role": "user", "content": "q", "images": [{"url": "https://x/a.png"}]}]}
    response = await post(url, body)
    errors = [e for e in native_events(response.content) if isinstance(e, ServerError)]
    if response.status_code == 200:
        assert errors and errors[0].code == "unsupported_request" and not errors[0].retryable
        assert "Ollama takes images as bytes" in errors[0].message
    else:  # a failure before the first event may be answered with an HTTP status
        assert response.status_code in (400, 422, 502)
        assert "Ollama takes images as bytes" in response.text
    assert upstream.bodies == []
