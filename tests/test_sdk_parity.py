"""The official SDKs are the reference: the same recorded stream, served from a loopback server,
must give AIStream the same text, usage, stop reason and tool-call arguments as `openai` and
`anthropic` read from it, and the same failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from aistream import AIStream, APIStatusError, Message, RetryConfig, RetryEvent
from tests.helpers import RecordingSleep
from tests.loopback import Handler, Reply, Request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NO_RETRY = RetryConfig(max_retries=0)

#: Our normalised finish reasons for each provider's stop reason.
ANTHROPIC_STOP = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def replaying(*names: str) -> Handler:
    """Serve the fixtures in order, one per request (the last one again for any later request)."""
    bodies = [(FIXTURES / name).read_bytes() for name in names]
    count = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        body = bodies[min(count["n"], len(bodies) - 1)]
        count["n"] += 1
        await reply.start(headers={"request-id": f"req_{count['n']}"})
        await reply.send(body)
        await reply.end()

    return handler


async def ours(url: str, protocol: str, **kwargs: Any) -> tuple[Message, AIStream]:
    chat = AIStream(url, protocol=protocol, model="m", **kwargs)  # type: ignore[arg-type]
    try:
        return await chat.send("Hello"), chat
    finally:
        await chat.aclose()


# --- OpenAI ----------------------------------------------------------------------------------


async def openai_reference(base_url: str) -> Any:
    """What the openai SDK assembles from the stream (its own ChatCompletionStreamState)."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="test", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        async for chunk in stream:
            state.handle_chunk(chunk)
        # the snapshot, not get_final_completion(): that raises on finish_reason "length"
        return state.current_completion_snapshot
    finally:
        await client.close()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("openai/basic.sse", id="basic"),
        pytest.param("openai/length.sse", id="length"),
        pytest.param("openai/tool_calls.sse", id="tool-calls"),
        pytest.param("openai/parallel_tool_calls.sse", id="parallel-tool-calls"),
        pytest.param("openai/content_filter.sse", id="content-filter"),
    ],
)
async def test_openai_sdk_and_aistream_read_the_same_reply(serve: Any, name: str) -> None:
    server = await serve(replaying(name))
    reference = await openai_reference(server.url)
    reply, chat = await ours(server.url + "/v1/chat/completions", "openai", retry=NO_RETRY)

    choice = reference.choices[0]
    assert reply.content == (choice.message.content or "")
    assert reply.finish_reason == choice.finish_reason
    assert reply.usage is not None and reference.usage is not None
    assert reply.usage.prompt_tokens == reference.usage.prompt_tokens
    assert reply.usage.completion_tokens == reference.usage.completion_tokens
    assert reply.usage.total_tokens == reference.usage.total_tokens
    expected_calls = [
        (c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []
    ]
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == expected_calls
    assert chat.usage == reply.usage


async def test_openai_basic_stream_text_and_usage_match_explicitly(serve: Any) -> None:
    server = await serve(replaying("openai/basic.sse"))
    reference = await openai_reference(server.url)
    reply, _ = await ours(server.url + "/v1/chat/completions", "openai", retry=NO_RETRY)
    assert reference.choices[0].message.content == reply.content == "I'm here to help."
    assert (reference.usage.prompt_tokens, reference.usage.completion_tokens) == (14, 4)


async def test_openai_in_stream_error_makes_both_raise_with_the_provider_message(
    serve: Any,
) -> None:
    server = await serve(replaying("openai/error_in_stream.sse"))
    with pytest.raises(openai.APIError) as sdk_error:
        await openai_reference(server.url)
    assert sdk_error.value.message == "Context length exceeded"

    chat = AIStream(
        server.url + "/v1/chat/completions",
        protocol="openai",
        retry=RetryConfig(max_retries=3, jitter=False),
    )
    with pytest.raises(APIStatusError) as our_error:
        await chat.send("Hello")
    await chat.aclose()
    assert "Context length exceeded" in str(our_error.value)
    assert our_error.value.code == "CONTEXT_LENGTH_EXCEEDED"
    assert len(server.requests) == 2  # one each: not transient, so not retried
    assert chat.messages[-1].role == "user"


async def test_openai_sdk_and_aistream_send_the_same_endpoint_and_stream_options(
    serve: Any,
) -> None:
    server = await serve(replaying("openai/basic.sse"))
    await openai_reference(server.url)
    await ours(server.url + "/v1/chat/completions", "openai", retry=NO_RETRY)
    sdk, mine = server.requests
    assert sdk.path == mine.path == "/v1/chat/completions"
    for body in (sdk.json(), mine.json()):
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}


# --- Anthropic -------------------------------------------------------------------------------


async def anthropic_reference(base_url: str) -> tuple[Any, str]:
    """The SDK's final message and the text its `text_stream` yielded."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="test", max_retries=0)
    try:
        async with client.messages.stream(
            model="m", max_tokens=1024, messages=[{"role": "user", "content": "Hello"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            return await stream.get_final_message(), text
    finally:
        await client.close()


def anthropic_prompt_tokens(usage: Any) -> int:
    return int(
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("anthropic/basic_terminated.sse", id="basic-with-ping"),
        pytest.param("anthropic/thinking.sse", id="thinking"),
        pytest.param("anthropic/tool_use.sse", id="tool-use"),
        pytest.param("anthropic/usage_cumulative.sse", id="cumulative-usage"),
    ],
)
async def test_anthropic_sdk_and_aistream_read_the_same_reply(serve: Any, name: str) -> None:
    server = await serve(replaying(name))
    message, streamed_text = await anthropic_reference(server.url)
    reply, _ = await ours(server.url + "/v1/messages", "anthropic", retry=NO_RETRY)

    text = "".join(b.text for b in message.content if b.type == "text")
    thinking = "".join(b.thinking for b in message.content if b.type == "thinking")
    assert reply.content == text == streamed_text
    assert (reply.reasoning or "") == thinking
    assert reply.finish_reason == ANTHROPIC_STOP[message.stop_reason]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == anthropic_prompt_tokens(message.usage)
    assert reply.usage.completion_tokens == message.usage.output_tokens
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == calls


async def test_anthropic_thinking_matches_explicitly(serve: Any) -> None:
    server = await serve(replaying("anthropic/thinking.sse"))
    message, _ = await anthropic_reference(server.url)
    reply, _ = await ours(server.url + "/v1/messages", "anthropic", retry=NO_RETRY)
    assert (
        reply.reasoning == message.content[0].thinking == "The user asks for 17 × 3. 17 × 3 = 51."
    )
    assert reply.content == "17 × 3 = 51."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (42, 58)


async def test_anthropic_tool_use_arguments_match_the_sdk_input(serve: Any) -> None:
    server = await serve(replaying("anthropic/tool_use.sse"))
    message, _ = await anthropic_reference(server.url)
    reply, _ = await ours(server.url + "/v1/messages", "anthropic", retry=NO_RETRY)
    [block] = [b for b in message.content if b.type == "tool_use"]
    [call] = reply.tool_calls
    assert call.parsed_arguments() == block.input == {"location": "Paris"}
    assert (call.id, call.name) == (block.id, block.name)
    assert reply.finish_reason == "tool_calls" and message.stop_reason == "tool_use"


async def test_anthropic_overloaded_error_makes_both_raise(serve: Any) -> None:
    server = await serve(replaying("anthropic/overloaded.sse"))
    with pytest.raises(anthropic.APIStatusError) as sdk_error:
        await anthropic_reference(server.url)
    assert "overloaded_error" in str(sdk_error.value)

    chat = AIStream(server.url + "/v1/messages", protocol="anthropic", retry=NO_RETRY)
    with pytest.raises(APIStatusError) as our_error:
        await chat.send("Hello")
    await chat.aclose()
    assert our_error.value.code == "overloaded_error"
    assert our_error.value.retryable
    assert "Overloaded" in str(our_error.value)


async def test_anthropic_overloaded_then_ok_retries_from_the_start(
    serve: Any, fake_sleep: RecordingSleep
) -> None:
    server = await serve(replaying("anthropic/overloaded.sse", "anthropic/thinking.sse"))
    chat = AIStream(
        server.url + "/v1/messages",
        protocol="anthropic",
        retry=RetryConfig(max_retries=2, initial_delay=0.5, jitter=False),
        sleep=fake_sleep,
    )
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("Hello")
    await chat.aclose()
    assert reply.content == "17 × 3 = 51."
    assert reply.reasoning == "The user asks for 17 × 3. 17 × 3 = 51."
    assert reply.usage is not None and reply.usage.prompt_tokens == 42
    assert reply.usage.completion_tokens == 58
    [retry] = retries
    assert retry.resume is False and retry.attempt == 1
    assert isinstance(retry.error, APIStatusError) and retry.error.code == "overloaded_error"
    assert fake_sleep.delays == [0.5]
    assert len(server.requests) == 2


async def test_anthropic_unterminated_stream_is_a_drop_for_aistream(serve: Any) -> None:
    """WIRE.md's basic fixture lacks the final blank line: message_stop never dispatches."""
    server = await serve(replaying("anthropic/basic.sse", "anthropic/basic_terminated.sse"))
    chat = AIStream(
        server.url + "/v1/messages",
        protocol="anthropic",
        retry=RetryConfig(max_retries=1, jitter=False),
        sleep=RecordingSleep(),
    )
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    reply = await chat.send("Hello")
    await chat.aclose()
    assert reply.content == "Hello there!"  # restarted, not doubled
    assert [r.resume for r in retries] == [False]
