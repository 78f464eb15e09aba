"""Output formats: native, OpenAI chunks and the Vercel UI message stream, from one event model.

Real uvicorn on 127.0.0.1 for every client test. Clients: our own `AIStream` (native, and
openai against ``/v1/chat/completions`` and ``/api/chat?format=openai``), the official
``openai`` SDK against the OpenAI-compatible output, and, for the Vercel format, the recorded
fixtures in ``tests/fixtures/vercel/``, a Python port of the ``ai`` package's
``uiMessageChunkSchema`` (the strict one of ai 5.0.92–5.0.216) and, when node is there, the
``ai`` package's own parser (``parseJsonEventStream`` + ``readUIMessageStream``).

The readers (`native_reply`, `openai_reply`, `vercel_reply`) are in ``readers.py``, shared with
``test_relay_dialects.py``: each checks the structure of its format and returns a `Reply`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import aistream
from aistream._wire._dialect import ChatMessage, ChatRequest, ImagePart, ToolCallPart
from aistream._wire._events import (
    Done,
    FinishReason,
    Metadata,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream.server import EventStreamResponse, create_app
from aistream.server._encoders import NativeEncoder, OpenAIEncoder, VercelEncoder, make_encoder

from .helpers import GUARD, ScriptedBackend, chat_body, frames, guard
from .readers import (
    READERS,
    UI_CHUNK_SCHEMA,
    check_ui_chunk,
    finish_in,
    native_reply,
    openai_reply,
    sse_data,
    vercel_reply,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vercel"
QUIET: dict[str, Any] = {"heartbeat_interval": None}


# --- a backend that yields everything the event model has -------------------------------------


class RichBackend:
    """A ChatBackend test double; the last user message picks the scenario.

    - ``rich``: reasoning, text, two tool calls, usage in two snapshots, ``tool_calls``;
    - ``text``: text and usage, ``stop``;
    - ``error``: text, usage, then a transient in-stream error;
    - ``overloaded``: a transient in-stream error before anything else;
    - ``fatal``: an error that must not be retried, though its code sounds transient;
    - ``split``: text and reasoning whose emoji arrive as two lone UTF-16 halves;
    - ``boom``: text, then the backend raises;
    - ``metadata``: a Metadata event between two texts, an unknown finish reason.
    """

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self.closed = asyncio.Event()

    def model_for(self, request: ChatRequest) -> str:
        return "rich-1"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        scenario = request.messages[-1].content
        try:
            for event in SCENARIOS[scenario]:
                if isinstance(event, Exception):
                    raise event
                yield event
                await asyncio.sleep(0)
        finally:
            self.closed.set()


SCENARIOS: dict[str, list[Any]] = {
    "rich": [
        ReasoningDelta("Let me think."),
        ReasoningDelta(" Done."),
        TextDelta("Hello"),
        TextDelta(" wörld ☕\n"),
        UsageReport(12, 1),
        ToolCallDone("call_w", "get_weather", '{"city": "Paris"}'),
        ToolCallDone("call_t", "get_time", '{"tz": "Europe/Paris"}'),
        UsageReport(None, 9),
        FinishReason("tool_calls"),
    ],
    "text": [TextDelta("Just"), TextDelta(" text."), UsageReport(3, 2, 5), FinishReason("stop")],
    "error": [
        TextDelta("Partial"),
        UsageReport(4, 1),
        ServerError("the upstream model server is overloaded", "upstream_unavailable", True),
    ],
    "overloaded": [ServerError("try again later", "upstream_unavailable", True)],
    "fatal": [ServerError("the model broke", "internal_error", False)],
    "split": [  # an upstream that cut an emoji into its UTF-16 halves
        TextDelta("ok \ud83d"),
        TextDelta("\ude00!"),
        ReasoningDelta("\ud83e"),
        ReasoningDelta("\udd14"),
        FinishReason("stop"),
    ],
    "boom": [TextDelta("Before"), RuntimeError("backend bug")],
    "metadata": [
        TextDelta("A"),
        Metadata({"note": "kept"}),
        TextDelta("B"),
        FinishReason("weird_reason"),
    ],
}

RICH_TEXT = "Hello wörld ☕\n"
RICH_REASONING = "Let me think. Done."
RICH_CALLS = [
    ("call_w", "get_weather", {"city": "Paris"}),
    ("call_t", "get_time", {"tz": "Europe/Paris"}),
]


async def post(url: str, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=GUARD) as client:
        return await client.post(url + path, json=body, **kwargs)


@pytest.fixture
async def rich(serve_app: Any) -> tuple[str, RichBackend]:
    backend = RichBackend()
    app = create_app(backend=backend, id_factory=iter(f"s{n}" for n in range(99)).__next__, **QUIET)
    return await serve_app(app), backend


# --- every format carries the same reply ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
async def test_each_format_carries_text_reasoning_tool_calls_usage_and_finish(
    rich: tuple[str, RichBackend], fmt: str
) -> None:
    url, _ = rich
    response = await post(url, f"/api/chat?format={fmt}", chat_body("rich"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers.get("x-vercel-ai-ui-message-stream") == (
        "v1" if fmt == "vercel" else None
    )
    reply = READERS[fmt](response.content)
    assert reply.text == RICH_TEXT and reply.reasoning == RICH_REASONING
    assert reply.tool_calls == RICH_CALLS
    assert reply.usage == (12, 9, 21)
    assert reply.finish == finish_in(fmt, "tool_calls")
    assert reply.ended and reply.error is None


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
async def test_each_format_ends_an_in_stream_error_with_its_error_shape(
    rich: tuple[str, RichBackend], fmt: str
) -> None:
    url, _ = rich
    reply = READERS[fmt]((await post(url, f"/api/chat?format={fmt}", chat_body("error"))).content)
    assert reply.text == "Partial"
    assert reply.error is not None
    assert reply.error[0] == "the upstream model server is overloaded"
    if fmt != "vercel":  # the UI stream's error part has errorText only
        assert reply.error[1] == "upstream_unavailable"
    assert reply.usage == (4, 1, 5)  # usage reported before the error still arrives
    if fmt == "vercel":
        assert reply.finish == "error"


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
async def test_each_format_turns_a_backend_exception_into_an_internal_error(
    rich: tuple[str, RichBackend], fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = rich
    with caplog.at_level(logging.ERROR, "aistream.server"):
        response = await post(url, f"/api/chat?format={fmt}", chat_body("boom"))
    reply = READERS[fmt](response.content)
    assert reply.text == "Before"
    assert reply.error is not None and "RuntimeError" in reply.error[0]
    assert "backend bug" not in response.text  # details stay in the log
    assert "backend bug" in caplog.text


class BrokenBackend:
    """A backend whose `stream` raises before it returns an iterator."""

    def model_for(self, request: ChatRequest) -> str:
        return "broken"

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        raise RuntimeError("no iterator for you")


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
async def test_a_backend_that_cannot_even_start_is_an_internal_error_in_each_format(
    serve_app: Any, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve_app(create_app(backend=BrokenBackend(), **QUIET))
    with caplog.at_level(logging.ERROR, "aistream.server"):
        reply = READERS[fmt]((await post(url, f"/api/chat?format={fmt}", chat_body("x"))).content)
        completion = await post(
            url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
        )
    assert reply.error is not None and "RuntimeError" in reply.error[0] and reply.ended
    assert completion.status_code == 500
    assert completion.json()["error"]["code"] == "internal_error"
    assert "no iterator for you" in caplog.text


async def test_metadata_goes_native_and_vercel_and_is_logged_for_openai(
    rich: tuple[str, RichBackend], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = rich
    native = native_reply((await post(url, "/api/chat", chat_body("metadata"))).content)
    vercel = vercel_reply(
        (await post(url, "/api/chat?format=vercel", chat_body("metadata"))).content
    )
    with caplog.at_level(logging.INFO, "aistream.server"):
        openai_ = openai_reply(
            (await post(url, "/api/chat?format=openai", chat_body("metadata"))).content
        )
    assert native.metadata == {"note": "kept"} and vercel.metadata["note"] == "kept"
    assert native.text == vercel.text == openai_.text == "AB"
    assert "openai format cannot express metadata events" in caplog.text
    # a finish reason the format has no name for: passed through, or "other" in the UI stream
    assert (native.finish, openai_.finish, vercel.finish) == ("weird_reason",) * 2 + ("other",)


# --- our own client in each format it reads ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/api/chat", "native"),
        ("/v1/chat/completions", "openai"),
        ("/api/chat?format=openai", "openai"),
    ],
)
async def test_aistream_reads_the_reply_in_native_and_openai_formats(
    rich: tuple[str, RichBackend], path: str, protocol: str
) -> None:
    url, backend = rich
    retry = aistream.RetryConfig(max_retries=0)
    async with aistream.AIStream(
        url + path, protocol=protocol, retry=retry, timeout=GUARD, system_prompt="Be brief"
    ) as chat:
        tokens: list[str] = []
        chat.on("token", tokens.append)
        reply = await guard(chat.send("rich"))
    assert reply.content == RICH_TEXT and "".join(tokens) == RICH_TEXT
    assert reply.reasoning == RICH_REASONING
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == RICH_CALLS
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 9)
    assert reply.finish_reason == "tool_calls"
    request = backend.requests[-1]
    system = request.system_prompt or request.messages[0].content  # openai: a system message
    assert system == "Be brief" and request.messages[-1].content == "rich"


@pytest.mark.parametrize(
    ("path", "protocol"), [("/api/chat", "native"), ("/v1/chat/completions", "openai")]
)
async def test_a_character_split_into_halves_arrives_whole(
    rich: tuple[str, RichBackend], path: str, protocol: str
) -> None:
    url, _ = rich
    raw = await post(url, f"{path}?format={protocol}", chat_body("split"))
    raw.content.decode("utf-8")  # the frames are valid UTF-8: the halves went out as escapes
    async with aistream.AIStream(url + path, protocol=protocol, timeout=GUARD) as chat:  # type: ignore[arg-type]
        tokens: list[str] = []
        chat.on("token", tokens.append)
        reply = await guard(chat.send("split"))
        assert reply.content == "ok \U0001f600!" and "".join(tokens) == reply.content
        assert reply.reasoning == "\U0001f914"
        await guard(chat.send("text"))  # the history, emoji included, goes back as UTF-8 JSON


async def test_aistream_openai_protocol_sees_a_transient_error_as_retryable(
    rich: tuple[str, RichBackend],
) -> None:
    url, backend = rich
    retry = aistream.RetryConfig(max_retries=0)
    async with aistream.AIStream(
        url + "/v1/chat/completions", protocol="openai", retry=retry, timeout=GUARD
    ) as chat:
        with pytest.raises(aistream.APIStatusError, match="try again later") as caught:
            await guard(chat.send("overloaded"))
    assert caught.value.code == "upstream_unavailable" and caught.value.retryable is True
    assert len(backend.requests) == 1


async def test_aistream_openai_protocol_keeps_a_server_error_not_retryable(
    rich: tuple[str, RichBackend],
) -> None:
    url, backend = rich
    retry = aistream.RetryConfig(max_retries=3, initial_delay=0, max_delay=0)
    async with aistream.AIStream(
        url + "/v1/chat/completions", protocol="openai", retry=retry, timeout=GUARD
    ) as chat:
        with pytest.raises(aistream.APIStatusError, match="the model broke") as caught:
            await guard(chat.send("fatal"))
    assert caught.value.code == "internal_error" and caught.value.retryable is False
    assert len(backend.requests) == 1  # "internal_error" alone would have been retried


# --- the openai SDK against /v1/chat/completions ----------------------------------------------


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=GUARD)


async def test_openai_sdk_streams_text_reasoning_tool_calls_usage_and_finish(
    rich: tuple[str, RichBackend],
) -> None:
    url, backend = rich
    client = openai_client(url)
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[
            {"role": "developer", "content": "Be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "ri"}, {"type": "text", "text": "ch"}],
            },
        ],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.5,
        max_completion_tokens=99,
    )
    text, reasoning, finish = "", "", None
    calls: dict[int, Any] = {}
    chunks = [chunk async for chunk in stream]
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk" and chunk.model == "rich-1"
        delta = chunk.choices[0].delta
        text += delta.content or ""
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or []:
            calls[call.index] = call
        finish = chunk.choices[0].finish_reason or finish
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (12, 9)
    assert usage_chunk.usage.total_tokens == 21
    assert text == RICH_TEXT and reasoning == RICH_REASONING and finish == "tool_calls"
    assert [
        (c.id, c.type, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
        for _, c in sorted(calls.items())
    ] == [(i, "function", n, a) for i, n, a in RICH_CALLS]
    request = backend.requests[-1]
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief"),
        ("user", "rich"),
    ]
    assert request.model == "gpt-test"
    assert dict(request.options) == {"temperature": 0.5, "max_tokens": 99}
    await client.close()


async def test_openai_sdk_without_include_usage_gets_no_usage_chunk(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    client = openai_client(url)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "text"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(len(chunk.choices) == 1 for chunk in chunks)  # code indexing choices[0] is safe
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Just text."
    assert chunks[-1].choices[0].finish_reason == "stop"
    await client.close()


async def test_openai_sdk_stream_helper_accumulates_the_final_completion(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    client = openai_client(url)
    async with client.chat.completions.stream(
        model="m",
        messages=[{"role": "user", "content": "rich"}],
        stream_options={"include_usage": True},
    ) as stream:
        async for _ in stream:
            pass
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == RICH_TEXT
    assert [c.function.name for c in message.tool_calls or []] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.total_tokens == 21
    await client.close()


async def test_openai_sdk_without_stream_gets_one_chat_completion(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    client = openai_client(url)
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "rich"}]
    )
    assert completion.object == "chat.completion" and completion.model == "rich-1"
    message = completion.choices[0].message
    assert message.content == RICH_TEXT
    assert (message.model_extra or {}).get("reasoning_content") == RICH_REASONING
    assert [(c.id, c.function.name) for c in message.tool_calls or []] == [  # type: ignore[union-attr]
        ("call_w", "get_weather"),
        ("call_t", "get_time"),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (12, 21)
    await client.close()


async def test_openai_sdk_raises_the_in_stream_error_with_our_message(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    client = openai_client(url)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "error"}], stream=True
    )
    text = ""
    with pytest.raises(openai.APIError, match="overloaded") as caught:
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == "Partial"
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.type == "server_error"  # transient: OpenAI-aware clients may retry
    with pytest.raises(openai.APIStatusError, match="overloaded") as status:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "error"}]
        )
    assert status.value.status_code == 503
    await client.close()


async def test_openai_sdk_lists_the_backend_model(serve_app: Any) -> None:
    url = await serve_app(create_app(model="demo-x", **QUIET))
    client = openai_client(url)
    assert [m.id async for m in client.models.list()] == ["demo-x"]
    await client.close()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        pytest.param({"n": 2}, '"n" must be 1', id="n"),
        pytest.param(
            {"tools": [{"type": "custom", "custom": {"name": "f"}}]},
            "other tool types are not relayed",
            id="tools",
        ),
        pytest.param(
            {"messages": [{"role": "tool", "tool_call_id": "c", "content": "42"}]},
            "not a call of the assistant message before it",
            id="tool-result",
        ),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                        ],
                    }
                ]
            },
            "input_audio part",
            id="audio",
        ),
        pytest.param({"messages": []}, "is empty", id="no-messages"),
        pytest.param(
            {"messages": [{"role": "robot", "content": "x"}]}, "role is 'robot'", id="role"
        ),
    ],
)
async def test_openai_sdk_gets_a_400_bad_request_error_it_understands(
    rich: tuple[str, RichBackend], kwargs: dict[str, Any], says: str
) -> None:
    url, backend = rich
    client = openai_client(url)
    arguments: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "text"}]}
    arguments.update(kwargs)
    with pytest.raises(openai.BadRequestError, match=says) as caught:
        await client.chat.completions.create(stream=True, **arguments)
    assert caught.value.type == "invalid_request_error"
    assert backend.requests == []
    await client.close()


# --- the Vercel UI message stream -------------------------------------------------------------

USE_CHAT_BODY: dict[str, Any] = {  # what useChat's DefaultChatTransport POSTs (ai 5)
    "id": "chat-1",
    "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "earlier"}]},
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "hmm", "state": "done"},
                {"type": "text", "text": "an answer", "state": "done"},
            ],
        },
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "rich"}]},
    ],
    "trigger": "submit-message",
    "messageId": None,
}


@pytest.mark.parametrize(
    ("scenario", "fixture"), [("rich", "aistream_rich.sse"), ("error", "aistream_error.sse")]
)
async def test_vercel_output_is_byte_for_byte_the_recorded_fixture(
    rich: tuple[str, RichBackend], scenario: str, fixture: str
) -> None:
    url, _ = rich
    response = await post(url, "/api/chat?format=vercel", chat_body(scenario))
    recorded = (FIXTURES / fixture).read_bytes()
    assert response.content == recorded
    vercel_reply(recorded)  # and the fixture itself passes the schema and the part rules


def test_vercel_fixtures_use_the_same_part_shapes_as_the_recorded_protocol_sample() -> None:
    """WIRE.md b6 (``ui_stream.sse``): every part type both use has the same keys."""
    sample = {}
    for payload in sse_data((FIXTURES / "ui_stream.sse").read_bytes())[:-1]:
        chunk = json.loads(payload)
        sample[chunk["type"]] = set(chunk)
    ours: dict[str, set[str]] = {}
    for name in ("aistream_rich.sse", "aistream_error.sse"):
        for payload in sse_data((FIXTURES / name).read_bytes())[:-1]:
            chunk = json.loads(payload)
            ours.setdefault(chunk["type"], set()).update(chunk)
    shared = set(sample) & set(ours)
    assert {"start", "text-start", "text-delta", "text-end", "error", "finish"} <= shared
    for kind in shared:
        optional = set(UI_CHUNK_SCHEMA[kind][1]) if kind in UI_CHUNK_SCHEMA else set()
        assert ours[kind] - optional == sample[kind] - optional, kind


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        pytest.param("/api/chat", USE_CHAT_BODY, {}, id="useChat-body"),
        pytest.param("/api/chat", chat_body("rich"), {"x-vercel-ai-ui-message-stream": "v1"}),
        pytest.param(
            "/api/chat", chat_body("rich"), {"accept": "text/event-stream; format=vercel"}
        ),
        pytest.param("/api/chat?format=vercel", chat_body("rich"), {}, id="query"),
        pytest.param(
            "/v1/chat/completions?format=vercel",
            {"messages": [{"role": "user", "content": "rich"}], "stream": True},
            {},
            id="openai-endpoint-query",
        ),
    ],
)
async def test_vercel_format_is_chosen_by_query_header_accept_or_a_use_chat_body(
    rich: tuple[str, RichBackend], path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    url, backend = rich
    response = await post(url, path, body, headers=headers)
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    reply = vercel_reply(response.content)
    assert reply.text == RICH_TEXT and reply.finish == "tool-calls"
    if body is USE_CHAT_BODY:
        assert [(m.role, m.content) for m in backend.requests[-1].messages] == [
            ("user", "earlier"),
            ("assistant", "an answer"),
            ("user", "rich"),
        ]


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/api/chat", {}, "native"),
        ("/api/chat", {"accept": "text/event-stream"}, "native"),
        ("/api/chat?format=openai", {"x-vercel-ai-ui-message-stream": "v1"}, "openai"),
        ("/api/chat", {"accept": "text/event-stream;format=openai, */*"}, "openai"),
        ("/v1/chat/completions?format=native", {}, "native"),
        ("/v1/chat/completions", {}, "openai"),
    ],
)
async def test_format_rules_query_first_then_headers_then_the_endpoint(
    rich: tuple[str, RichBackend], path: str, headers: dict[str, str], expected: str
) -> None:
    url, _ = rich
    body = chat_body("text", stream_options={"include_usage": True})
    response = await post(url, path, body, headers=headers)
    assert READERS[expected](response.content).text == "Just text."


async def test_unknown_format_is_a_400_naming_the_formats(rich: tuple[str, RichBackend]) -> None:
    url, backend = rich
    response = await post(url, "/api/chat?format=xml", chat_body("text"))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_format"
    assert "native, openai, vercel" in response.json()["error"]
    response = await post(url, "/v1/chat/completions?format=xml", chat_body("text"))
    assert response.status_code == 400 and response.json()["error"]["param"] == "format"
    assert backend.requests == []


async def test_use_chat_files_other_than_user_images_are_refused(
    rich: tuple[str, RichBackend],
) -> None:
    url, backend = rich
    pdf = {
        "type": "file",
        "mediaType": "application/pdf",
        "url": "data:application/pdf;base64,AA==",
    }
    body = {"messages": [{"id": "u", "role": "user", "parts": [pdf]}]}
    response = await post(url, "/api/chat", body)
    assert response.status_code == 422 and response.json()["code"] == "unsupported_content"
    assert "messages[0].parts[0] is a file (application/pdf)" in response.json()["error"]
    image = {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="}
    body = {
        "messages": [
            {"id": "u", "role": "user", "parts": [image, {"type": "text", "text": "text"}]}
        ]
    }
    response = await post(url, "/api/chat", body)
    assert vercel_reply(response.content).text == "Just text."
    [user] = backend.requests[-1].messages
    assert user.images == (ImagePart(data=b"\x00", media_type="image/png"),)
    assert backend.requests[-1].messages[-1].content == "text"


#: What useChat sends back after a two-step turn whose tools ran in the browser
#: (`addToolOutput`), as in PROVIDERS.md §4.6; the last part was never answered.
TOOL_TURN: list[dict[str, Any]] = [
    {"type": "step-start"},
    {"type": "reasoning", "text": "Let me look.", "state": "done"},
    {"type": "text", "text": "Checking.", "state": "done"},
    {
        "type": "tool-get_weather",
        "toolCallId": "c1",
        "state": "output-available",
        "input": {"city": "Paris"},
        "output": {"temp": 21},
    },
    {
        "type": "dynamic-tool",
        "toolName": "get_time",
        "toolCallId": "c2",
        "state": "output-error",
        "input": {},
        "errorText": "clock unavailable",
    },
    {"type": "step-start"},
    {"type": "text", "text": "It is 21 degrees.", "state": "done"},
    {"type": "tool-lookup", "toolCallId": "c3", "state": "input-available", "input": {}},
    {"type": "data-x", "data": 1},
]


async def test_use_chat_tool_parts_become_calls_and_results_step_by_step(
    rich: tuple[str, RichBackend], caplog: pytest.LogCaptureFixture
) -> None:
    url, backend = rich
    body = {
        "messages": [
            {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "Weather?"}]},
            {"id": "a", "role": "assistant", "parts": TOOL_TURN},
            {"id": "u", "role": "user", "parts": [{"type": "text", "text": "text"}]},
        ]
    }
    with caplog.at_level(logging.WARNING, "aistream.server"):
        response = await post(url, "/api/chat", body)
    assert vercel_reply(response.content).text == "Just text."
    weather = ToolCallPart("c1", "get_weather", '{"city":"Paris"}')
    clock = ToolCallPart("c2", "get_time", "{}")
    assert backend.requests[-1].messages == (
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", "Checking.", tool_calls=(weather, clock)),
        ChatMessage("tool", '{"temp":21}', tool_call_id="c1", name="get_weather"),
        ChatMessage("tool", "clock unavailable", tool_call_id="c2", is_error=True, name="get_time"),
        ChatMessage("assistant", "It is 21 degrees."),
        ChatMessage("user", "text"),
    )
    # The call that has no result yet is left out (every provider refuses it), and said so.
    assert "tool-lookup (input-available)" in caplog.text and "data-x" not in caplog.text


async def test_use_chat_tool_parts_are_checked_like_native_calls(
    rich: tuple[str, RichBackend],
) -> None:
    url, backend = rich
    bad = {"type": "tool-get_weather", "toolCallId": "", "state": "output-available", "output": 1}
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "text"}]}
    body = {"messages": [{"id": "a", "role": "assistant", "parts": [bad]}, user]}
    response = await post(url, "/api/chat", body)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert "messages[0].parts[0].id must be a non-empty string" in response.json()["error"]
    assert backend.requests == []


# --- resume: a native feature -----------------------------------------------------------------


async def test_formats_without_ids_refuse_resume_and_use_chat_resume_gets_204(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    headers = {"last-event-id": "s0:3"}
    response = await post(url, "/api/chat?format=vercel", chat_body("text"), headers=headers)
    assert response.status_code == 400 and response.json()["code"] == "resume_unsupported"
    response = await post(url, "/v1/chat/completions", chat_body("text"), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "resume_unsupported"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + "/api/chat/chat-1/stream")).status_code == 204
        replay = await client.get(url + "/api/chat/s0?format=openai")
    assert replay.status_code == 400


async def test_native_format_on_the_openai_endpoint_is_resumable(
    rich: tuple[str, RichBackend],
) -> None:
    url, _ = rich
    body = {"messages": [{"role": "user", "content": "text"}], "stream": True}
    first = await post(url, "/v1/chat/completions?format=native", body)
    ids = [frame.id for frame in frames(first.content)]
    async with httpx.AsyncClient() as client:
        again = await client.get(url + "/api/chat/s0", headers={"last-event-id": ids[1] or ""})
    assert native_reply(first.content).text == "Just text."
    assert [frame.id for frame in frames(again.content)] == ids[2:]


async def test_a_client_leaving_a_vercel_stream_cancels_the_generation_at_once(
    serve_app: Any,
) -> None:
    backend = ScriptedBackend()
    url = await serve_app(create_app(backend=backend, resume_grace=3600, **QUIET))
    backend.put("one")  # then it waits: a long reply in progress
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", url + "/api/chat?format=vercel", json=chat_body("go")) as response,
    ):
        async for chunk in response.aiter_bytes():
            if b"text-delta" in chunk:
                break
    await guard(backend.closed.wait())  # no grace period: nothing could resume it


# --- EventStreamResponse in your own app ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["native", "openai", "vercel"])
async def test_event_stream_response_writer_speaks_every_format(serve_app: Any, fmt: str) -> None:
    async def produce(stream: EventStreamResponse) -> None:
        await stream.send_reasoning("why")
        await stream.send_token("Hi")
        await stream.send_tool_call("c1", "f", '{"a": 1}')
        await stream.send_usage(3, 2)
        await stream.end("tool_calls")

    async def chat(request: Request) -> Response:
        return EventStreamResponse(produce, format=fmt, model="own", **QUIET)

    url = await serve_app(Starlette(routes=[Route("/chat", chat, methods=["POST"])]))
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/chat")
    reply = READERS[fmt](response.content)
    assert (reply.text, reply.reasoning, reply.tool_calls) == ("Hi", "why", [("c1", "f", {"a": 1})])
    assert reply.usage == (3, 2, 5) and reply.finish == finish_in(fmt, "tool_calls")


def test_event_stream_response_rejects_an_unknown_format() -> None:
    async def nothing() -> AsyncIterator[str]:
        yield "x"

    with pytest.raises(ValueError, match="native, openai, vercel"):
        EventStreamResponse(nothing(), format="xml")


# --- encoders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["Hello", "", 'quote " and \\ backslash', "line\nbreak\r\n", "☕ 😀 \u2028 \x00"]
)
def test_openai_and_vercel_token_fast_paths_equal_their_generic_json(text: str) -> None:
    openai_ = OpenAIEncoder("s1", 'mo"del', created=7)
    openai_.start()
    chunk = json.loads(openai_.token(text).decode().removeprefix("data: "))
    assert chunk["choices"][0]["delta"] == {"content": text}
    assert chunk["model"] == 'mo"del' and chunk["created"] == 7
    vercel = VercelEncoder("s1")
    vercel.start()
    parts = [json.loads(p) for p in sse_data(vercel.token(text) + vercel.token(text))]
    assert parts == [
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": text},
        {"type": "text-delta", "id": "text-1", "delta": text},
    ]


def test_vercel_tool_call_with_arguments_that_are_not_json_is_a_tool_output_error() -> None:
    encoder = VercelEncoder("s1")
    frame = encoder.encode(ToolCallDone("c", "f", '{"cut'))
    assert frame is not None
    call, error = [json.loads(p) for p in sse_data(frame)]
    check_ui_chunk(call)
    check_ui_chunk(error)
    assert call["type"] == "tool-input-available" and call["input"] == '{"cut'
    assert error["type"] == "tool-output-error" and error["toolCallId"] == "c"
    assert "not valid JSON" in error["errorText"]


def test_usage_snapshots_merge_and_the_total_follows_the_parts() -> None:
    encoder = OpenAIEncoder("s1", include_usage=True)
    for report in (UsageReport(10, 1, 11), UsageReport(None, 5), UsageReport(12, None, 99)):
        assert encoder.encode(report) is None
    (_, usage, _) = sse_data(encoder.done())
    assert json.loads(usage)["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 99,
    }


def test_make_encoder_and_the_encoders_share_one_surface() -> None:
    for fmt, kind in (
        ("native", NativeEncoder),
        ("openai", OpenAIEncoder),
        ("vercel", VercelEncoder),
    ):
        encoder = make_encoder(fmt, "s1", "m")
        assert isinstance(encoder, kind) and encoder.format == fmt
        assert encoder.resumable is (fmt == "native")
        encoder.start()
        assert encoder.encode("tok") is not None and encoder.encode(TextDelta("")) is None
        encoder.encode(Done())
        assert encoder.finished and encoder.seq >= 3
        with pytest.raises(TypeError, match="cannot stream a int"):
            encoder.encode(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control characters"):
        make_encoder("vercel", "bad\nid")


# --- the ai package's own parser, under node ---------------------------------------------------

NPM_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "npm-ai"

CHECK_JS = r"""
// argv: <the ai package's directory> <body file>. Runs the ai package's own UI message stream
// parser on the body and prints the chunks, invalid chunks, errors and the final UIMessage.
const fs = require("fs");
const path = require("path");
const ai = require(process.argv[2]);
const body = fs.readFileSync(process.argv[3]);
async function main() {
  const source = new ReadableStream({
    start(c) { c.enqueue(new Uint8Array(body)); c.close(); },
  });
  const chunks = [], invalid = [], streamErrors = [];
  const parsed = ai.parseJsonEventStream({ stream: source, schema: ai.uiMessageChunkSchema })
    .pipeThrough(new TransformStream({
      transform(result, c) {
        if (!result.success) { invalid.push(String(result.error)); return; }
        chunks.push(result.value);
        c.enqueue(result.value);
      },
    }));
  let message = null;
  const onError = (e) => streamErrors.push(String((e && e.message) || e));
  for await (const snapshot of ai.readUIMessageStream({ stream: parsed, onError })) {
    message = snapshot;
  }
  process.stdout.write(JSON.stringify({ chunks, invalid, streamErrors, message }));
}
main().catch((e) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); });
"""


@pytest.fixture(scope="session")
def ai_sdk() -> Path:
    """The ai package (the newest 5: ``node_modules/ai5`` of the cache `make npm-ai` installs
    from tests/node/package-lock.json; ``AISTREAM_AI_SDK_DIR`` to use another)."""
    given = os.environ.get("AISTREAM_AI_SDK_DIR")
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the ai package's own parser cannot run")
    target = Path(given) if given else NPM_CACHE / "node_modules" / "ai5"
    if not (target / "package.json").exists():
        pytest.skip(f"{target} is missing: run `make npm-ai` (installs the ai packages with npm)")
    return target


def run_ai_parser(ai_dir: Path, body: bytes, tmp_path: Path) -> dict[str, Any]:
    script, data = tmp_path / "check.cjs", tmp_path / "body.sse"
    script.write_text(CHECK_JS)
    data.write_bytes(body)
    done = subprocess.run(
        ["node", str(script), str(ai_dir), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_the_ai_package_parses_our_stream_into_the_ui_message(
    ai_sdk: Path, rich: tuple[str, RichBackend], tmp_path: Path
) -> None:
    url, _ = rich
    body = (await post(url, "/api/chat", USE_CHAT_BODY)).content
    result = run_ai_parser(ai_sdk, body, tmp_path)
    assert result["invalid"] == [] and result["streamErrors"] == []
    message = result["message"]
    assert message["id"] == "msg-s0" and message["role"] == "assistant"
    assert message["metadata"] == {
        "model": "rich-1",
        "finishReason": "tool-calls",
        "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21},
    }
    parts = [{k: v for k, v in p.items() if k != "providerMetadata"} for p in message["parts"]]
    assert parts == [
        {"type": "step-start"},
        {"type": "reasoning", "id": "reasoning-1", "text": RICH_REASONING, "state": "done"},
        {"type": "text", "text": RICH_TEXT, "state": "done"},
        {
            "type": "tool-get_weather",
            "toolCallId": "call_w",
            "state": "input-available",
            "input": {"city": "Paris"},
        },
        {
            "type": "tool-get_time",
            "toolCallId": "call_t",
            "state": "input-available",
            "input": {"tz": "Europe/Paris"},
        },
    ]
    assert result["chunks"][-1] == {
        "type": "finish",
        "messageMetadata": {
            "finishReason": "tool-calls",
            "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21},
        },
    }


@pytest.mark.parametrize("fixture", ["aistream_rich.sse", "aistream_error.sse"])
def test_the_ai_package_accepts_every_chunk_of_the_recorded_fixtures(
    ai_sdk: Path, tmp_path: Path, fixture: str
) -> None:
    body = (FIXTURES / fixture).read_bytes()
    result = run_ai_parser(ai_sdk, body, tmp_path)
    assert result["invalid"] == []
    assert len(result["chunks"]) == len(sse_data(body)) - 1  # all but [DONE]
    if fixture == "aistream_error.sse":
        assert result["streamErrors"] == ["the upstream model server is overloaded"]
        assert result["message"]["parts"][1] == {"type": "text", "text": "Partial", "state": "done"}
