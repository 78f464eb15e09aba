"""OpenAIDialect: the fast path, tool calls, errors (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aistream._wire._dialect import NOTHING, ChatMessage, ChatRequest
from aistream._wire._events import (
    Done,
    FinishReason,
    Metadata,
    NDJSONLine,
    ReasoningDelta,
    ServerError,
    Skipped,
    SSEEvent,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._openai import OpenAIDialect
from tests.wire.replay import replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(OpenAIDialect(), chunks)


def test_openai_basic_fixture_gives_exact_events() -> None:
    events, _ = replay([(FIXTURES / "openai" / "basic.sse").read_bytes()])
    assert events == [
        TextDelta("I'm"),
        TextDelta(" here"),
        TextDelta(" to help."),
        FinishReason("stop"),
        UsageReport(14, 4, 18),
        Done(),
    ]


def test_openai_parallel_tool_calls_complete_in_index_order_at_finish() -> None:
    events, _ = replay([(FIXTURES / "openai" / "parallel_tool_calls.sse").read_bytes()])
    assert events == [
        ToolCallDone("call_Ahj6vPqW1cXr2bN7sLm0kTyE", "get_weather", '{"location": "Paris"}'),
        ToolCallDone("call_Zq4mN8vB2xLr7cT1sWk3pYhD", "get_time", '{"tz": "Europe/Paris"}'),
        FinishReason("tool_calls"),
        UsageReport(96, 41, 137),
        Done(),
    ]


def test_openai_content_filter_prompt_results_chunk_is_metadata() -> None:
    events, _ = replay([(FIXTURES / "openai" / "content_filter.sse").read_bytes()])
    assert isinstance(events[0], Metadata) and "prompt_filter_results" in events[0].data


# --- single chunks ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> SSEEvent:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return SSEEvent(json.dumps({"id": "c", "choices": [choice], **extra}))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(chunk({"content": "Hi"}), id="content-only"),
        pytest.param(chunk({"content": "Hi"}, usage=None), id="usage-null"),
        pytest.param(chunk({"role": "assistant", "content": "Hi"}), id="with-role"),
        pytest.param(chunk({"content": "Hi", "reasoning_content": None}), id="null-reasoning"),
        pytest.param(chunk({"content": "Hi", "refusal": None}), id="null-refusal"),
    ],
)
def test_openai_plain_text_chunk_gives_one_text_delta(frame: SSEEvent) -> None:
    assert OpenAIDialect().parse(frame) == [TextDelta("Hi")]


def test_openai_empty_content_gives_shared_empty_list() -> None:
    assert OpenAIDialect().parse(chunk({"role": "assistant", "content": ""})) is NOTHING


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        pytest.param("stop", "stop", id="stop"),
        pytest.param("length", "length", id="length"),
        pytest.param("tool_calls", "tool_calls", id="tool-calls"),
        pytest.param("content_filter", "content_filter", id="content-filter"),
        pytest.param("function_call", "tool_calls", id="legacy-function-call"),
    ],
)
def test_openai_finish_reason_is_normalised(finish: str, expected: str) -> None:
    assert OpenAIDialect().parse(chunk(finish=finish)) == [FinishReason(expected)]


def test_openai_text_in_the_finish_chunk_comes_before_the_reason() -> None:
    assert OpenAIDialect().parse(chunk({"content": "!"}, "stop")) == [
        TextDelta("!"),
        FinishReason("stop"),
    ]


def test_openai_usage_on_a_choice_chunk_is_reported() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert OpenAIDialect().parse(chunk({"content": "x"}, "stop", usage=usage)) == [
        TextDelta("x"),
        FinishReason("stop"),
        UsageReport(3, 1, 4),
    ]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_openai_reasoning_field_gives_reasoning_delta(key: str) -> None:
    assert OpenAIDialect().parse(chunk({"content": None, key: "hmm"})) == [ReasoningDelta("hmm")]


def test_openai_reasoning_sent_under_both_names_is_not_doubled() -> None:
    frame = chunk({"reasoning_content": "hmm", "reasoning": "hmm"})
    assert OpenAIDialect().parse(frame) == [ReasoningDelta("hmm")]


def test_openai_refusal_is_reply_text() -> None:
    frame = chunk({"content": None, "refusal": "I can't help with that."})
    assert OpenAIDialect().parse(frame) == [TextDelta("I can't help with that.")]


def test_openai_content_parts_give_text_and_reasoning() -> None:
    parts = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Let me see."}]},
        {"type": "thinking", "thinking": " Done."},
        {"type": "thinking", "thinking": None},
        {"type": "text", "text": "Hi"},
        {"type": "text", "text": ""},
    ]
    assert OpenAIDialect().parse(chunk({"content": parts})) == [
        ReasoningDelta("Let me see."),
        ReasoningDelta(" Done."),
        TextDelta("Hi"),
    ]


def test_openai_unknown_content_part_is_skipped_once_per_stream() -> None:
    dialect = OpenAIDialect()
    frame = chunk({"content": [{"type": "image_url", "image_url": {"url": "x"}}]})
    [event] = dialect.parse(frame)
    assert isinstance(event, Skipped) and "'image_url'" in event.reason
    assert not dialect.parse(frame)


def test_openai_unknown_delta_field_is_skipped_once_per_stream() -> None:
    dialect = OpenAIDialect()
    first = dialect.parse(chunk({"content": "a", "audio": {"id": "x"}}))
    second = dialect.parse(chunk({"content": "b", "audio": {"id": "y"}}))
    assert first[0] == TextDelta("a") and isinstance(first[1], Skipped)
    assert "'audio'" in first[1].reason
    assert second == [TextDelta("b")]


def test_openai_choice_index_above_zero_is_skipped_once_per_stream() -> None:
    dialect = OpenAIDialect()
    frame = SSEEvent(json.dumps({"choices": [{"index": 1, "delta": {"content": "x"}}]}))
    [event] = dialect.parse(frame)
    assert isinstance(event, Skipped) and "n > 1" in event.reason
    assert not dialect.parse(frame)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            {"message": "Context length exceeded", "code": "CONTEXT_LENGTH_EXCEEDED"},
            ("Context length exceeded", "CONTEXT_LENGTH_EXCEEDED", False),
            id="context-length",
        ),
        pytest.param(
            {"message": "Overloaded", "type": "server_error", "code": None},
            ("Overloaded", "server_error", True),
            id="server-error",
        ),
        pytest.param(
            {"message": "Rate limit reached", "code": "rate_limit_exceeded"},
            ("Rate limit reached", "rate_limit_exceeded", True),
            id="rate-limit",
        ),
        pytest.param(
            {"message": "Bad gateway", "code": 502},
            ("Bad gateway", "502", True),
            id="status-502",
        ),
        pytest.param("plain text error", ("plain text error", None, False), id="string"),
    ],
)
def test_openai_error_in_stream_is_retryable_only_when_transient(
    error: Any, expected: tuple[str, str | None, bool]
) -> None:
    [event] = OpenAIDialect().parse(SSEEvent(json.dumps({"error": error})))
    assert isinstance(event, ServerError)
    assert (event.message, event.code, event.retryable) == expected


def test_openai_error_alongside_choices_wins_over_them() -> None:
    frame = chunk({"content": ""}, "error", error={"message": "upstream died", "code": 502})
    [event] = OpenAIDialect().parse(frame)
    assert isinstance(event, ServerError) and event.message == "upstream died"


def test_openai_tool_call_fragments_across_chunks_join_at_finish() -> None:
    dialect = OpenAIDialect()
    start = {"index": 0, "id": "call_1", "type": "function"}
    frames = [
        chunk({"tool_calls": [{**start, "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
    ]
    assert [list(dialect.parse(f)) for f in frames] == [[], [], []]
    assert dialect.parse(chunk(finish="tool_calls")) == [
        ToolCallDone("call_1", "f", '{"a": 1}'),
        FinishReason("tool_calls"),
    ]


def test_openai_tool_calls_without_finish_reason_complete_at_done() -> None:
    dialect = OpenAIDialect()
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    dialect.parse(chunk({"tool_calls": [call]}))
    assert dialect.parse(SSEEvent("[DONE]")) == [ToolCallDone("call_1", "f", "{}"), Done()]


def test_openai_whole_tool_calls_without_index_stay_apart() -> None:
    dialect = OpenAIDialect()
    calls = [
        {"id": "a", "function": {"name": "f", "arguments": '{"x":1}'}},
        {"id": "b", "function": {"name": "g", "arguments": {"y": 2}}},
    ]
    dialect.parse(chunk({"tool_calls": calls}))
    assert dialect.parse(chunk(finish="tool_calls")) == [
        ToolCallDone("a", "f", '{"x":1}'),
        ToolCallDone("b", "g", '{"y":2}'),
        FinishReason("tool_calls"),
    ]


def test_openai_tool_call_without_id_gets_a_stable_one() -> None:
    dialect = OpenAIDialect()
    dialect.parse(chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}))
    assert dialect.parse(chunk(finish="tool_calls"))[0] == ToolCallDone("call_0", "f", "{}")


def test_openai_tool_call_without_name_is_skipped() -> None:
    dialect = OpenAIDialect()
    dialect.parse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    events = dialect.parse(chunk(finish="tool_calls"))
    assert isinstance(events[0], Skipped) and events[1:] == [FinishReason("tool_calls")]


def test_openai_choice_that_is_not_an_object_is_skipped() -> None:
    [event] = OpenAIDialect().parse(SSEEvent('{"choices": ["x"]}'))
    assert isinstance(event, Skipped) and "choice" in event.reason


def test_openai_tool_call_that_is_not_an_object_is_skipped() -> None:
    [event] = OpenAIDialect().parse(chunk({"tool_calls": ["x"]}))
    assert isinstance(event, Skipped) and "tool call" in event.reason


def test_openai_malformed_json_is_skipped() -> None:
    [event] = OpenAIDialect().parse(SSEEvent('{"choices": ['))
    assert isinstance(event, Skipped) and "malformed" in event.reason


def test_openai_object_that_is_not_a_chunk_is_skipped() -> None:
    [event] = OpenAIDialect().parse(SSEEvent('{"hello": "world"}'))
    assert isinstance(event, Skipped)


def test_openai_done_marks_finished() -> None:
    dialect = OpenAIDialect()
    assert dialect.parse(SSEEvent("[DONE]")) == [Done()]
    assert dialect.finished


def test_openai_ndjson_frame_is_skipped() -> None:
    [event] = OpenAIDialect().parse(NDJSONLine("{}"))
    assert isinstance(event, Skipped)


# --- requests --------------------------------------------------------------------------------


def test_openai_build_request_puts_system_first_and_asks_for_usage() -> None:
    request = ChatRequest(
        messages=(ChatMessage("user", "Hi"),),
        model="gpt-4o",
        system_prompt="Be brief",
        options={"temperature": 0, "stream": False},
    )
    spec = OpenAIDialect().build_request("https://api.openai.com/v1/chat/completions", request)
    body = json.loads(spec.body)
    assert body == {
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi"},
        ],
        "model": "gpt-4o",
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert spec.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"message": "m", "code": "internal_error"}, True),  # by its code
        ({"message": "m", "code": "internal_error", "retryable": False}, False),  # aistream's flag
        ({"message": "m", "code": "invalid_request", "retryable": True}, True),
        ({"message": "m", "code": "internal_error", "retryable": "no"}, True),  # not a bool
    ],
)
def test_openai_in_stream_error_takes_a_retryable_flag_when_there_is_one(
    error: dict[str, object], retryable: bool
) -> None:
    events = OpenAIDialect().parse(SSEEvent(json.dumps({"error": error})))
    assert [(type(e), getattr(e, "retryable", None)) for e in events] == [(ServerError, retryable)]
