"""Tools and images against the official SDKs (API.md §5).

The same conversation (a system prompt, user text with an image, an assistant tool call, its
tool result, and a tool definition) is sent by `openai`, `anthropic` and `ollama` to a recording
loopback server and by AIStream in the matching protocol: the JSON bodies must be equal in
meaning. The recorded tool-call streams, parsed by each SDK and by AIStream, give the same calls.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from aistream import AIStream, Image, Message, RetryConfig, Tool, ToolCall
from aistream._history import wire_messages, wire_tools
from aistream._wire._dialect import ChatRequest
from aistream._wire._registry import dialect_factory
from tests.loopback import Handler, Reply, Request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NDJSON = {"content-type": "application/x-ndjson"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
PNG_B64 = base64.b64encode(PNG).decode()
SYSTEM = "You answer about the weather."
QUESTION = "What is the weather where this photo was taken?"
ARGUMENTS = {"city": "Paris", "unit": "celsius"}
RESULT = '{"temperature": 21, "unit": "celsius"}'
CALL_ID = "call_0001"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city."},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
TOOL = Tool(name="get_weather", description="Current weather for a city.", parameters=SCHEMA)


def recording(fixture: str, headers: dict[str, str] | None = None) -> Handler:
    """Answer every request with a recorded stream (the server records the request)."""
    body = (FIXTURES / fixture).read_bytes()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(headers=headers)
        await reply.send(body)
        await reply.end()

    return handler


def history() -> list[Message]:
    return [
        Message(role="user", content=QUESTION, images=[Image(data=PNG, media_type="image/png")]),
        Message(
            role="assistant",
            content="",
            tool_calls=[ToolCall(id=CALL_ID, name="get_weather", arguments=json.dumps(ARGUMENTS))],
        ),
        Message(role="tool", content=RESULT, tool_call_id=CALL_ID),
    ]


async def ours(url: str, protocol: str) -> tuple[dict[str, Any], Message]:
    """What AIStream sends for the conversation (recorded by the server), and its reply."""
    chat = AIStream(
        url,
        protocol=protocol,  # type: ignore[arg-type]
        model="m",
        system_prompt=SYSTEM,
        tools=[TOOL],
        messages=history(),
        retry=RetryConfig(max_retries=0),
    )
    async with chat:
        reply = await chat.send_tool_results({})  # the history ends with the tool's result
    return reply, chat  # type: ignore[return-value]


def our_body(url: str, protocol: str) -> dict[str, Any]:
    """The body AIStream's dialect builds for the conversation."""
    request = ChatRequest(wire_messages(history()), "m", SYSTEM, {}, wire_tools([TOOL]))
    spec = dialect_factory(protocol, url)().build_request(url, request)
    return json.loads(spec.body)


async def sent_by_aistream(server: Any, url: str, protocol: str) -> tuple[dict[str, Any], Message]:
    """Send the conversation with AIStream to `server`: the body it recorded, and the reply."""
    before = len(server.requests)
    reply, _ = await ours(url, protocol)
    [request] = server.requests[before:]
    return request.json(), reply


def without_nulls(value: Any) -> Any:
    """JSON with null members dropped: an absent field and a null one mean the same."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# --- OpenAI chat completions -----------------------------------------------------------------


async def test_openai_sdk_and_aistream_send_the_same_tool_conversation(serve: Any) -> None:
    server = await serve(recording("openai/tool_calls.sse"))
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    async with client:
        stream = await client.chat.completions.create(
            model="m",
            messages=[
                {"role": "system", "content": SYSTEM},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": QUESTION},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_B64}"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": CALL_ID,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": json.dumps(ARGUMENTS)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": CALL_ID, "content": RESULT},
            ],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather for a city.",
                        "parameters": SCHEMA,
                    },
                }
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        calls: dict[int, list[str]] = {}
        async for chunk in stream:
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                slot = calls.setdefault(delta.index, ["", "", ""])
                slot[0] += delta.id or ""
                slot[1] += (delta.function and delta.function.name) or ""
                slot[2] += (delta.function and delta.function.arguments) or ""
    url = server.url + "/v1/chat/completions"
    body, reply = await sent_by_aistream(server, url, "openai")
    assert server.requests[0].path == server.requests[1].path == "/v1/chat/completions"
    assert without_nulls(body) == without_nulls(server.requests[0].json())
    assert body == our_body(url, "openai")
    expected = [tuple(calls[i]) for i in sorted(calls)]
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == expected
    assert expected and reply.finish_reason == "tool_calls"


# --- Anthropic -------------------------------------------------------------------------------


async def test_anthropic_sdk_and_aistream_send_the_same_tool_conversation(serve: Any) -> None:
    server = await serve(recording("anthropic/tool_use.sse"))
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0)
    async with client:
        stream = await client.messages.create(
            model="m",
            max_tokens=4096,
            system=SYSTEM,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": PNG_B64,
                            },
                        },
                        {"type": "text", "text": QUESTION},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": CALL_ID,
                            "name": "get_weather",
                            "input": ARGUMENTS,
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": CALL_ID, "content": RESULT}],
                },
            ],
            tools=[
                {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "input_schema": SCHEMA,
                }
            ],
            stream=True,
        )
        async for _ in stream:
            pass
    url = server.url + "/v1/messages"
    body, reply = await sent_by_aistream(server, url, "anthropic")
    assert server.requests[0].path == server.requests[1].path == "/v1/messages"
    assert without_nulls(body) == without_nulls(server.requests[0].json())
    again = anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0)
    async with (
        again,
        again.messages.stream(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
        ) as reference,
    ):
        message = await reference.get_final_message()
    expected = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.parsed_arguments()) for c in reply.tool_calls] == expected
    assert expected


def test_anthropic_error_results_keep_their_flag_and_share_one_user_message() -> None:
    messages = [
        *history()[:1],
        Message(
            role="assistant",
            content="Checking both.",
            tool_calls=[ToolCall(id="a", name="get_weather"), ToolCall(id="b", name="get_weather")],
        ),
        Message(role="tool", content="ok", tool_call_id="a"),
        Message(role="tool", content="ValueError: no such city", tool_call_id="b", is_error=True),
    ]
    request = ChatRequest(wire_messages(messages), "m")
    body = json.loads(
        dialect_factory("anthropic", "http://h/v1/messages")()
        .build_request("http://h/v1/messages", request)
        .body
    )
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Checking both."}
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "ok"},
            {
                "type": "tool_result",
                "tool_use_id": "b",
                "content": "ValueError: no such city",
                "is_error": True,
            },
        ],
    }


# --- Ollama ----------------------------------------------------------------------------------


async def test_ollama_package_and_aistream_send_the_same_tool_conversation(serve: Any) -> None:
    server = await serve(recording("ollama/tool_calls.ndjson", NDJSON))
    client = ollama.AsyncClient(host=server.url)
    stream = await client.chat(
        model="m",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION, "images": [ollama.Image(value=PNG)]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": ARGUMENTS}}],
            },
            {"role": "tool", "content": RESULT, "tool_name": "get_weather"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "parameters": SCHEMA,
                },
            }
        ],
        stream=True,
    )
    calls: list[Any] = []
    async for chunk in stream:
        calls += chunk.message.tool_calls or []
    url = server.url + "/api/chat"
    body, reply = await sent_by_aistream(server, url, "ollama")
    assert server.requests[0].path == server.requests[1].path == "/api/chat"
    assert without_nulls(body) == without_nulls(server.requests[0].json())
    expected = [(c.function.name, dict(c.function.arguments)) for c in calls]
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == expected
    assert expected


async def test_ollama_package_and_aistream_read_the_same_tool_calls(serve: Any) -> None:
    server = await serve(recording("ollama/tool_calls_ids.ndjson", NDJSON))
    client = ollama.AsyncClient(host=server.url)
    calls: list[Any] = []
    async for chunk in await client.chat(
        model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
    ):
        calls += chunk.message.tool_calls or []
    chat = AIStream(server.url + "/api/chat", protocol="ollama", retry=RetryConfig(max_retries=0))
    async with chat:
        reply = await chat.send("Hi")
    expected = [(c.function.name, dict(c.function.arguments)) for c in calls]
    assert expected == [("get_weather", {"city": "Zürich"})]
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == expected
    assert reply.finish_reason == "tool_calls"


@pytest.mark.parametrize("protocol", ["ollama"])
def test_an_image_url_ollama_cannot_carry_is_a_value_error(protocol: str) -> None:
    messages = [Message(role="user", content="?", images=[Image(url="https://x.test/a.png")])]
    dialect = dialect_factory(protocol, "http://h/api/chat")()
    with pytest.raises(ValueError, match="Ollama takes images as bytes"):
        dialect.build_request("http://h/api/chat", ChatRequest(wire_messages(messages)))


def test_anthropic_refuses_arguments_that_are_not_an_object_and_bmp_images() -> None:
    url = "http://h/v1/messages"
    bad_call = [
        Message(
            role="assistant", content="", tool_calls=[ToolCall(id="c", name="f", arguments="[1]")]
        )
    ]
    bmp = [Message(role="user", content="?", images=[Image(data=b"BM..", media_type="image/bmp")])]
    for messages, match in ((bad_call, "not a JSON object"), (bmp, "image/bmp")):
        dialect = dialect_factory("anthropic", url)()
        with pytest.raises(ValueError, match=match):
            dialect.build_request(url, ChatRequest(wire_messages(messages)))


def test_native_request_carries_tools_calls_results_and_images() -> None:
    url = "http://h/api/chat"
    body = our_body(url, "native")
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather for a city.", "parameters": SCHEMA}
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": QUESTION,
            "images": [{"data": PNG_B64, "mediaType": "image/png"}],
        },
        {
            "role": "assistant",
            "content": "",
            "toolCalls": [
                {"id": CALL_ID, "name": "get_weather", "arguments": json.dumps(ARGUMENTS)}
            ],
        },
        {"role": "tool", "content": RESULT, "toolCallId": CALL_ID},
    ]
    assert body["systemPrompt"] == SYSTEM
