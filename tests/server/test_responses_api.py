"""POST /v1/responses (API.md §7): the official openai SDK's ``responses.create(stream=True)``
and ``responses.stream(...)`` read our stream unchanged, and so does AIStream's own dialect;
the request body is read into the one ChatRequest (tools, tool results, images)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from aistream import AIStream, APIStatusError, RetryConfig, ToolCall, Usage
from aistream._wire._dialect import ChatRequest, ImagePart, ToolCallPart
from aistream._wire._events import (
    FinishReason,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream.server import create_app
from aistream.server._responses_out import RequestError, parse_responses

from .helpers import GUARD

REPLY: list[StreamEvent] = [
    ReasoningDelta("Think "),
    ReasoningDelta("first."),
    TextDelta("Hello"),
    TextDelta(", world"),
    ToolCallDone("call_1", "get_weather", '{"city":"Paris"}'),
    UsageReport(11, 7, 18),
    FinishReason("tool_calls"),
]


class Fixed:
    """A backend that replies with the same events to every request, and records them."""

    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events
        self.requests: list[ChatRequest] = []

    def model_for(self, request: ChatRequest) -> str | None:
        return request.model or "fixed"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        for event in self.events:
            yield event


async def serve_fixed(serve_app: Any, events: list[StreamEvent]) -> tuple[str, Fixed]:
    backend = Fixed(events)
    url: str = await serve_app(create_app(backend=backend, heartbeat_interval=None))
    return url, backend


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=GUARD)


async def test_openai_sdk_reads_our_responses_stream(serve_app: Any) -> None:
    url, backend = await serve_fixed(serve_app, REPLY)
    async with sdk(url) as client:
        stream = await client.responses.create(
            model="m", input="Weather?", instructions="Be brief.", stream=True
        )
        events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    reasoning = "".join(
        e.delta for e in events if e.type == "response.reasoning_summary_text.delta"
    )
    calls = [
        e.item
        for e in events
        if e.type == "response.output_item.done" and e.item.type == "function_call"
    ]
    assert (text, reasoning) == ("Hello, world", "Think first.")
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}')
    ]
    final = events[-1].response
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
        11,
        7,
        18,
    )
    assert final.output_text == "Hello, world"
    assert backend.requests[0].system_prompt == "Be brief."


async def test_openai_sdk_stream_helper_assembles_the_final_response(serve_app: Any) -> None:
    url, _ = await serve_fixed(serve_app, REPLY)
    async with sdk(url) as client, client.responses.stream(model="m", input="Weather?") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello, world"
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.status == "completed"


async def test_openai_sdk_gets_a_whole_response_without_stream(serve_app: Any) -> None:
    url, _ = await serve_fixed(serve_app, REPLY)
    async with sdk(url) as client:
        response = await client.responses.create(model="m", input="Weather?")
    assert response.output_text == "Hello, world"
    assert response.usage is not None and response.usage.total_tokens == 18


async def test_aistream_reads_our_responses_stream(serve_app: Any) -> None:
    url, _ = await serve_fixed(serve_app, REPLY)
    chat = AIStream(url + "/v1/responses", retry=RetryConfig(max_retries=0))
    reply = await chat.send("Weather?")
    await chat.aclose()
    assert (reply.content, reply.reasoning) == ("Hello, world", "Think first.")
    assert reply.tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    ]
    assert reply.usage == Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18)
    assert reply.finish_reason == "tool_calls"


async def test_a_cut_reply_ends_incomplete(serve_app: Any) -> None:
    url, _ = await serve_fixed(serve_app, [TextDelta("Once upon"), FinishReason("length")])
    async with sdk(url) as client:
        stream = await client.responses.create(model="m", input="Story", stream=True)
        events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    chat = AIStream(url + "/v1/responses", retry=RetryConfig(max_retries=0))
    reply = await chat.send("Story")
    await chat.aclose()
    assert (reply.content, reply.finish_reason) == ("Once upon", "length")


async def test_an_error_is_the_flat_error_event_then_response_failed(serve_app: Any) -> None:
    failure = ServerError("the upstream refused the key", "upstream_auth", False)
    url, _ = await serve_fixed(serve_app, [TextDelta("Hi"), failure])
    async with sdk(url) as client:
        stream = await client.responses.create(model="m", input="Hi", stream=True)
        events = [event async for event in stream]
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].message == "the upstream refused the key"
    assert events[-1].response.error.code == "upstream_auth"
    chat = AIStream(url + "/v1/responses", retry=RetryConfig(max_retries=0))
    with pytest.raises(APIStatusError, match="refused the key") as caught:
        await chat.send("Hi")
    await chat.aclose()
    assert caught.value.retryable is False


async def test_the_demo_model_answers_on_v1_responses(serve_app: Any) -> None:
    url: str = await serve_app(create_app(heartbeat_interval=None))
    chat = AIStream(url + "/v1/responses", model="demo", retry=RetryConfig(max_retries=0))
    native = AIStream(url + "/api/chat", model="demo", retry=RetryConfig(max_retries=0))
    reply, same = await chat.send("Hello"), await native.send("Hello")
    await chat.aclose()
    await native.aclose()
    assert reply.content == same.content and reply.content


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "m"}, 400, "input"),
        (
            {"model": "m", "input": "x", "previous_response_id": "resp_1"},
            400,
            "previous_response_id",
        ),
        ({"model": "m", "input": [{"type": "web_search_call"}]}, 400, "input[0]"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0]"),
        ({"model": "m", "input": "x", "temperature": "hot"}, 400, "temperature"),
    ],
)
async def test_bad_bodies_get_openai_errors(
    serve_app: Any, body: dict[str, Any], status: int, param: str
) -> None:
    url: str = await serve_app(create_app(heartbeat_interval=None))
    async with httpx.AsyncClient(timeout=GUARD) as client:
        response = await client.post(url + "/v1/responses", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


# --- the request body -------------------------------------------------------------------------


def test_parse_responses_reads_items_tools_images_and_options() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": '{"t": 21}'},
            {"role": "developer", "content": "Use Celsius."},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "max_output_tokens": 64,
        "temperature": 0.2,
        "stream": True,
        "store": False,
    }
    request, options = parse_responses(body)
    assert options.stream and request.model == "m" and request.system_prompt == "Be brief."
    assert [m.role for m in request.messages] == ["user", "assistant", "tool", "system"]
    assert request.messages[0].images == (ImagePart(url="https://example.com/a.png"),)
    assert request.messages[1].tool_calls == (ToolCallPart("c1", "get_weather", "{}"),)
    assert request.messages[2].tool_call_id == "c1"
    assert [t.name for t in request.tools] == ["get_weather"]
    assert dict(request.options) == {"max_tokens": 64, "temperature": 0.2}


def test_parse_responses_refuses_a_result_without_its_call() -> None:
    body = {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}
    with pytest.raises(RequestError, match="nope"):
        parse_responses(body)


def test_responses_stream_is_valid_json_throughout() -> None:
    from aistream.server._responses_out import ResponsesEncoder

    encoder = ResponsesEncoder("s1", "m", created=0)
    frames = encoder.start() + b"".join(encoder.encode(e) or b"" for e in REPLY) + encoder.done()
    datas = [line[6:] for line in frames.decode().splitlines() if line.startswith("data: ")]
    assert [json.loads(d)["sequence_number"] for d in datas] == list(range(len(datas)))
