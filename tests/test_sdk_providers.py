"""The Responses and Gemini dialects against the official SDKs (API.md §7).

The same recorded stream, served from a loopback server, is read by `openai`
(``responses.create(stream=True)``) or `google-genai` (``models.generate_content_stream``,
its base URL at the loopback server) and by AIStream: the same text, reasoning, tool calls,
usage and finish, and the same failures. The request bodies both send for one conversation (a
system prompt, user text with an image, an assistant tool call, its result, a tool) are equal
in meaning.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from aistream import AIStream, APIStatusError, Image, Message, RetryConfig, Tool, ToolCall
from aistream._history import wire_messages, wire_tools
from aistream._wire._dialect import ChatRequest
from aistream._wire._registry import dialect_factory
from tests.loopback import Handler, Reply, Request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NO_RETRY = RetryConfig(max_retries=0)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
PNG_B64 = base64.b64encode(PNG).decode()
SYSTEM = "You answer about the weather."
QUESTION = "What is the weather where this photo was taken?"
ARGUMENTS = {"city": "Paris", "unit": "celsius"}
RESULT = {"temperature": 21, "unit": "celsius"}
CALL_ID = "call_0001"
SIGNATURE = base64.b64encode(b"an opaque thought signature").decode()
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
    "required": ["city"],
}
TOOL = Tool(name="get_weather", description="Current weather for a city.", parameters=SCHEMA)


def replaying(fixture: str) -> Handler:
    """Answer every request with one recorded stream (the server records the request)."""
    body = (FIXTURES / fixture).read_bytes()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(body)
        await reply.end()

    return handler


async def ours(url: str) -> Message:
    chat = AIStream(url, model="m", retry=NO_RETRY)
    try:
        return await chat.send("Hello")
    finally:
        await chat.aclose()


# --- Responses: the stream --------------------------------------------------------------------


async def openai_reads(base_url: str) -> dict[str, Any]:
    """What the openai SDK's events say: text, reasoning, calls, usage, derived finish."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0)
    out: dict[str, Any] = {"text": "", "reasoning": "", "calls": [], "usage": None, "end": None}
    async with client:
        stream = await client.responses.create(model="m", input="Hello", stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                out["text"] += event.delta
            elif event.type == "response.reasoning_summary_text.delta":
                out["reasoning"] += event.delta
            elif event.type == "response.output_item.done" and event.item.type == "function_call":
                item = event.item
                out["calls"].append((item.call_id, item.name, item.arguments))
            elif event.type in ("response.completed", "response.incomplete"):
                usage = event.response.usage
                assert usage is not None
                out["usage"] = (usage.input_tokens, usage.output_tokens, usage.total_tokens)
                details = event.response.incomplete_details
                out["end"] = details.reason if details else None
            elif event.type == "error":
                out["error"] = (event.message, event.code)
    return out


#: The finish AIStream reports for the SDK's incomplete reason (None: complete).
RESPONSES_FINISH = {None: "stop", "max_output_tokens": "length"}


@pytest.mark.parametrize(
    "fixture", ["text", "background", "reasoning", "reasoning_tool_call", "incomplete"]
)
async def test_openai_sdk_and_aistream_read_the_same_responses_stream(
    serve: Any, fixture: str
) -> None:
    server = await serve(replaying(f"responses/{fixture}.sse"))
    reference = await openai_reads(server.url)
    reply = await ours(server.url + "/v1/responses")
    assert reply.content == reference["text"]
    assert (reply.reasoning or "") == reference["reasoning"]
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == reference["calls"]
    assert reply.usage is not None
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == reference["usage"]
    expected = "tool_calls" if reference["calls"] else RESPONSES_FINISH[reference["end"]]
    assert reply.finish_reason == expected


async def test_responses_nested_error_fails_both_with_the_same_message(serve: Any) -> None:
    server = await serve(replaying("responses/error.sse"))
    with pytest.raises(openai.APIError) as sdk_error:
        await openai_reads(server.url)
    with pytest.raises(APIStatusError) as our_error:
        await ours(server.url + "/v1/responses")
    assert sdk_error.value.message in str(our_error.value)
    assert our_error.value.code == "insufficient_quota" and our_error.value.retryable is False


async def test_responses_flat_error_is_an_event_for_the_sdk_and_a_transient_error_for_us(
    serve: Any,
) -> None:
    server = await serve(replaying("responses/error_flat.sse"))
    reference = await openai_reads(server.url)
    with pytest.raises(APIStatusError) as our_error:
        await ours(server.url + "/v1/responses")
    message, code = reference["error"]
    assert message in str(our_error.value) and our_error.value.code == code == "server_error"
    assert our_error.value.retryable is True  # server_error is transient (API.md §10)


# --- Gemini: the stream -----------------------------------------------------------------------


async def genai_reads(base_url: str) -> dict[str, Any]:
    """What google-genai's chunks say: text, thoughts, calls, last usage, last finish."""
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base_url))
    out: dict[str, Any] = {"text": "", "reasoning": "", "calls": [], "usage": None, "finish": None}
    stream = await client.aio.models.generate_content_stream(model="m", contents="Hello")
    async for chunk in stream:
        candidate = (chunk.candidates or [None])[0]
        if candidate is not None and candidate.content and candidate.content.parts:
            for part in candidate.content.parts:
                if part.function_call is not None:
                    call = part.function_call
                    out["calls"].append((call.name, call.args, part.thought_signature))
                elif part.text:
                    out["reasoning" if part.thought else "text"] += part.text
        if candidate is not None and candidate.finish_reason is not None:
            out["finish"] = candidate.finish_reason.value
        meta = chunk.usage_metadata
        if meta is not None and meta.prompt_token_count is not None:
            output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
            out["usage"] = (meta.prompt_token_count, output, meta.total_token_count)
    return out


GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
GEMINI_PATH = "/v1beta/models/m:streamGenerateContent"


@pytest.mark.parametrize("fixture", ["text", "thinking", "tool_call", "max_tokens"])
async def test_google_genai_and_aistream_read_the_same_gemini_stream(
    serve: Any, fixture: str
) -> None:
    server = await serve(replaying(f"gemini/{fixture}.sse"))
    reference = await genai_reads(server.url)
    reply = await ours(server.url + GEMINI_PATH)
    assert reply.content == reference["text"]
    assert (reply.reasoning or "") == reference["reasoning"]
    calls = [(c.name, json.loads(c.arguments), c.signature) for c in reply.tool_calls]
    expected_calls = [
        (name, args, base64.b64encode(sig).decode() if sig else None)
        for name, args, sig in reference["calls"]
    ]
    assert calls == expected_calls
    assert reply.usage is not None
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == reference["usage"]
    expected = "tool_calls" if reference["calls"] else GEMINI_FINISH[reference["finish"]]
    assert reply.finish_reason == expected


async def test_gemini_in_stream_error_fails_both_with_the_same_message(serve: Any) -> None:
    server = await serve(replaying("gemini/error.sse"))
    with pytest.raises(genai_errors.APIError) as sdk_error:
        await genai_reads(server.url)
    with pytest.raises(APIStatusError) as our_error:
        await ours(server.url + GEMINI_PATH)
    assert sdk_error.value.code == 503 and sdk_error.value.status == our_error.value.code
    assert str(sdk_error.value.message) in str(our_error.value)
    assert our_error.value.retryable is True


# --- the request bodies -----------------------------------------------------------------------


def history() -> list[Message]:
    call = ToolCall(
        id=CALL_ID, name="get_weather", arguments=json.dumps(ARGUMENTS), signature=SIGNATURE
    )
    return [
        Message(role="user", content=QUESTION, images=[Image(data=PNG, media_type="image/png")]),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content=json.dumps(RESULT), tool_call_id=CALL_ID),
    ]


def our_body(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body AIStream's dialect (picked by auto from `url`) builds for the conversation."""
    request = ChatRequest(wire_messages(history()), "m", SYSTEM, options or {}, wire_tools([TOOL]))
    spec = dialect_factory("auto", url)().build_request(url, request)
    body: dict[str, Any] = json.loads(spec.body)
    return body


def camel(value: Any) -> Any:
    """JSON with snake_case keys in camelCase: Google's JSON mapping reads both spellings."""
    if isinstance(value, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


async def test_openai_sdk_and_aistream_send_the_same_responses_request(serve: Any) -> None:
    server = await serve(replaying("responses/reasoning_tool_call.sse"))
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    async with client:
        stream = await client.responses.create(
            model="m",
            instructions=SYSTEM,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": QUESTION},
                        {
                            "type": "input_image",
                            "image_url": f"data:image/png;base64,{PNG_B64}",
                            "detail": "auto",
                        },
                    ],
                },
                {
                    "type": "function_call",
                    "call_id": CALL_ID,
                    "name": "get_weather",
                    "arguments": json.dumps(ARGUMENTS),
                },
                {"type": "function_call_output", "call_id": CALL_ID, "output": json.dumps(RESULT)},
            ],
            tools=[
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "parameters": SCHEMA,
                    "strict": False,
                }
            ],
            stream=True,
        )
        async for _ in stream:
            pass
    assert server.requests[0].path == "/v1/responses"
    assert our_body(server.url + "/v1/responses") == server.requests[0].json()


async def test_google_genai_and_aistream_send_the_same_gemini_request(serve: Any) -> None:
    server = await serve(replaying("gemini/tool_call.sse"))
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=server.url))
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part.from_bytes(data=PNG, mime_type="image/png"),
                types.Part(text=QUESTION),
            ],
        ),
        types.Content(
            role="model",
            parts=[
                types.Part(
                    function_call=types.FunctionCall(name="get_weather", args=ARGUMENTS),
                    thought_signature=base64.b64decode(SIGNATURE),
                )
            ],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"output": RESULT})
            ],
        ),
    ]
    declaration = types.FunctionDeclaration(
        name="get_weather", description="Current weather for a city.", parameters_json_schema=SCHEMA
    )
    config = types.GenerateContentConfig(
        system_instruction=SYSTEM,
        tools=[types.Tool(function_declarations=[declaration])],
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=64,
        stop_sequences=["END"],
    )
    stream = await client.aio.models.generate_content_stream(
        model="m", contents=contents, config=config
    )
    async for _ in stream:
        pass
    sent = camel(server.requests[0].json())
    assert server.requests[0].path.endswith("/models/m:streamGenerateContent?alt=sse")
    assert server.requests[0].headers["x-goog-api-key"] == "k"
    sent["systemInstruction"].pop("role", None)  # the SDK says "user"; the API needs none
    options = {"temperature": 0.5, "top_p": 0.9, "max_tokens": 64, "stop": "END"}
    assert camel(our_body(server.url + GEMINI_PATH, options)) == sent
