"""AnthropicDialect: usage, tools, errors, requests (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._dialect import HEARTBEAT_ONLY, NOTHING, ChatMessage, ChatRequest
from aistream._wire._events import (
    Done,
    FinishReason,
    Heartbeat,
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
from tests.wire.replay import outcome, replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(AnthropicDialect(), chunks)


def test_anthropic_basic_without_final_blank_line_is_not_finished() -> None:
    events, finished = replay([(FIXTURES / "anthropic" / "basic.sse").read_bytes()])
    assert events == [
        UsageReport(11, 1),
        Heartbeat(),
        TextDelta("Hello"),
        TextDelta(" there"),
        TextDelta("!"),
        UsageReport(None, 6),
        FinishReason("stop"),
    ]
    assert not finished


def test_anthropic_basic_terminated_is_finished_with_done_last() -> None:
    events, finished = replay([(FIXTURES / "anthropic" / "basic_terminated.sse").read_bytes()])
    assert events[-1] == Done()
    assert finished


def test_anthropic_thinking_gives_reasoning_then_text_and_ignores_signature() -> None:
    events, _ = replay([(FIXTURES / "anthropic" / "thinking.sse").read_bytes()])
    assert events == [
        UsageReport(42, 3),
        ReasoningDelta("The user asks for 17 × 3."),
        ReasoningDelta(" 17 × 3 = 51."),
        Heartbeat(),
        TextDelta("17 × 3"),
        TextDelta(" = 51."),
        UsageReport(None, 58),
        FinishReason("stop"),
        Done(),
    ]


def test_anthropic_tool_use_fragments_join_into_one_call_at_block_stop() -> None:
    events, _ = replay([(FIXTURES / "anthropic" / "tool_use.sse").read_bytes()])
    calls = [e for e in events if isinstance(e, ToolCallDone)]
    assert calls == [
        ToolCallDone("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", '{"location": "Paris"}')
    ]
    assert json.loads(calls[0].arguments) == {"location": "Paris"}
    assert events.index(calls[0]) < events.index(FinishReason("tool_calls"))


def test_anthropic_message_delta_usage_is_assigned_not_added() -> None:
    events, _ = replay([(FIXTURES / "anthropic" / "usage_cumulative.sse").read_bytes()])
    reports = [e for e in events if isinstance(e, UsageReport)]
    assert reports == [UsageReport(150, 1), UsageReport(None, 6), UsageReport(None, 10)]
    assert outcome(events, True).usage == (150, 10, 160)


def test_anthropic_prompt_tokens_include_cache_tokens() -> None:
    data = {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 20,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 30,
                "output_tokens": 1,
            }
        },
    }
    events = AnthropicDialect().parse(SSEEvent(json.dumps(data), "message_start"))
    assert events == [UsageReport(150, 1)]


def test_anthropic_message_delta_with_input_counts_updates_prompt() -> None:
    dialect = AnthropicDialect()
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    dialect.parse(SSEEvent(json.dumps(start), "message_start"))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"cache_read_input_tokens": 40, "output_tokens": 9},
    }
    assert dialect.parse(SSEEvent(json.dumps(delta), "message_delta")) == [
        UsageReport(45, 9),
        FinishReason("stop"),
    ]


def test_anthropic_forward_compat_reports_each_unsupported_part_once() -> None:
    events, _ = replay([(FIXTURES / "anthropic" / "forward_compat.sse").read_bytes()])
    reasons = [e.reason for e in events if isinstance(e, Skipped)]
    assert reasons == [
        "anthropic content block type 'redacted_thinking' is not supported",
        "anthropic content block type 'server_tool_use' is not supported",
        "unknown anthropic delta type 'citations_delta'",
        "unknown anthropic event type 'message_annotation'",
    ]
    assert not [e for e in events if isinstance(e, ToolCallDone)]


# --- single events ---------------------------------------------------------------------------


def frame(data: dict[str, object], event: str | None = None) -> SSEEvent:
    return SSEEvent(json.dumps(data), event or str(data["type"]))


def test_anthropic_ping_returns_the_shared_heartbeat_list() -> None:
    assert AnthropicDialect().parse(frame({"type": "ping"})) is HEARTBEAT_ONLY


def test_anthropic_ping_without_event_name_is_a_heartbeat_too() -> None:
    assert AnthropicDialect().parse(SSEEvent('{"type": "ping"}')) is HEARTBEAT_ONLY


def test_anthropic_events_without_event_lines_are_read_by_json_type() -> None:
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
    assert AnthropicDialect().parse(SSEEvent(json.dumps(data))) == [TextDelta("x")]


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [
        pytest.param("overloaded_error", True, id="overloaded"),
        pytest.param("api_error", True, id="api-error"),
        pytest.param("rate_limit_error", True, id="rate-limit"),
        pytest.param("timeout_error", True, id="timeout"),
        pytest.param("invalid_request_error", False, id="invalid-request"),
        pytest.param("authentication_error", False, id="authentication"),
    ],
)
def test_anthropic_error_event_type_decides_retryable(kind: str, retryable: bool) -> None:
    data = {"type": "error", "error": {"type": kind, "message": "boom"}}
    [event] = AnthropicDialect().parse(frame(data))
    assert event == ServerError("boom", kind, retryable, data)


def test_anthropic_error_event_with_malformed_json_surfaces_its_text() -> None:
    [event] = AnthropicDialect().parse(SSEEvent("upstream exploded", "error"))
    assert isinstance(event, ServerError)
    assert (event.message, event.code, event.retryable) == ("upstream exploded", None, False)


def test_anthropic_malformed_json_is_skipped() -> None:
    [event] = AnthropicDialect().parse(SSEEvent('{"type": "content_block_delta"', "x"))
    assert isinstance(event, Skipped) and "malformed JSON" in event.reason


def test_anthropic_unknown_event_type_is_skipped() -> None:
    [event] = AnthropicDialect().parse(frame({"type": "message_annotation"}))
    assert isinstance(event, Skipped) and "'message_annotation'" in event.reason


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("end_turn", "stop", id="end-turn"),
        pytest.param("stop_sequence", "stop", id="stop-sequence"),
        pytest.param("max_tokens", "length", id="max-tokens"),
        pytest.param("tool_use", "tool_calls", id="tool-use"),
        pytest.param("refusal", "content_filter", id="refusal"),
        pytest.param("pause_turn", "pause_turn", id="pause-turn-kept"),
    ],
)
def test_anthropic_stop_reason_is_normalised(reason: str, expected: str) -> None:
    data = {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {}}
    events = AnthropicDialect().parse(frame(data))
    assert events[-1] == FinishReason(expected)


def test_anthropic_message_stop_marks_finished() -> None:
    dialect = AnthropicDialect()
    assert dialect.parse(frame({"type": "message_stop"})) == [Done()]
    assert dialect.finished


def test_anthropic_signature_delta_is_not_reported() -> None:
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta"}}
    assert AnthropicDialect().parse(frame(data)) is NOTHING


def test_anthropic_tool_use_without_deltas_has_empty_object_arguments() -> None:
    dialect = AnthropicDialect()
    block = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    dialect.parse(frame({"type": "content_block_start", "index": 0, "content_block": block}))
    stop = dialect.parse(frame({"type": "content_block_stop", "index": 0}))
    assert stop == [ToolCallDone("toolu_1", "now", "{}")]


def test_anthropic_tool_use_with_whole_input_uses_it() -> None:
    dialect = AnthropicDialect()
    block = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
    dialect.parse(frame({"type": "content_block_start", "index": 0, "content_block": block}))
    stop = dialect.parse(frame({"type": "content_block_stop", "index": 0}))
    assert stop == [ToolCallDone("toolu_1", "f", '{"a":1}')]


def test_anthropic_input_json_delta_for_unknown_block_is_skipped() -> None:
    delta = {"type": "input_json_delta", "partial_json": "{}"}
    [event] = AnthropicDialect().parse(
        frame({"type": "content_block_delta", "index": 3, "delta": delta})
    )
    assert isinstance(event, Skipped)


def test_anthropic_json_without_type_is_read_by_event_name() -> None:
    data = '{"index":0,"delta":{"type":"text_delta","text":"x"}}'
    assert AnthropicDialect().parse(SSEEvent(data, "content_block_delta")) == [TextDelta("x")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"type": "content_block_delta", "index": 0}, id="delta-without-delta"),
        pytest.param({"type": "content_block_start", "index": 0}, id="start-without-block"),
    ],
)
def test_anthropic_block_event_missing_its_object_is_skipped(data: dict[str, object]) -> None:
    [event] = AnthropicDialect().parse(frame(data))
    assert isinstance(event, Skipped)


def test_anthropic_deltas_of_an_unsupported_block_are_not_reported_again() -> None:
    dialect = AnthropicDialect()
    block = {"type": "mcp_tool_use", "id": "x", "name": "y", "input": {}}
    [start] = dialect.parse(
        frame({"type": "content_block_start", "index": 0, "content_block": block})
    )
    assert isinstance(start, Skipped)
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta"}}
    assert dialect.parse(frame(delta)) is NOTHING
    assert dialect.parse(frame({"type": "content_block_stop", "index": 0})) is NOTHING


def test_anthropic_tool_use_without_name_is_skipped() -> None:
    dialect = AnthropicDialect()
    block = {"type": "tool_use", "id": "toolu_1", "input": {}}
    dialect.parse(frame({"type": "content_block_start", "index": 0, "content_block": block}))
    [event] = dialect.parse(frame({"type": "content_block_stop", "index": 0}))
    assert isinstance(event, Skipped) and "without a name" in event.reason


def test_anthropic_error_event_with_a_string_error_keeps_it_as_message() -> None:
    [event] = AnthropicDialect().parse(frame({"type": "error", "error": "boom"}))
    assert isinstance(event, ServerError)
    assert (event.message, event.code, event.retryable) == ("boom", None, False)


def test_anthropic_ndjson_frame_is_skipped() -> None:
    [event] = AnthropicDialect().parse(NDJSONLine("{}"))
    assert isinstance(event, Skipped)


# --- requests --------------------------------------------------------------------------------


def test_anthropic_build_request_uses_system_parameter_and_required_headers() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Answer in French."),
            ChatMessage("user", "Hello"),
            ChatMessage("assistant", "Bonjour"),
            ChatMessage("user", "Again"),
        ),
        model="claude-sonnet-4-5",
        system_prompt="Be brief.",
        options={"temperature": 0},
    )
    spec = AnthropicDialect().build_request("https://api.anthropic.com/v1/messages", request)
    assert (spec.method, spec.url) == ("POST", "https://api.anthropic.com/v1/messages")
    assert spec.headers == {
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "accept": "text/event-stream",
    }
    assert json.loads(spec.body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Again"},
        ],
        "system": "Be brief.\n\nAnswer in French.",
        "temperature": 0,
        "stream": True,
    }


def test_anthropic_build_request_max_tokens_option_overrides_default() -> None:
    request = ChatRequest((ChatMessage("user", "Hi"),), model="m", options={"max_tokens": 64})
    body = json.loads(AnthropicDialect().build_request("http://h/v1/messages", request).body)
    assert body["max_tokens"] == 64
    assert "system" not in body


def test_anthropic_build_request_leaves_out_empty_messages() -> None:
    request = ChatRequest(
        (ChatMessage("user", "Hi"), ChatMessage("assistant", ""), ChatMessage("user", "?"))
    )
    body = json.loads(AnthropicDialect().build_request("http://h/v1/messages", request).body)
    assert [m["content"] for m in body["messages"]] == ["Hi", "?"]
