"""NativeDialect: the seed's variants, requests (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

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
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._native import NativeDialect
from tests.wire.replay import replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(NativeDialect(), chunks)


def test_native_ours_fixture_gives_exact_events_with_indices() -> None:
    events, finished = replay([(FIXTURES / "native" / "ours.sse").read_bytes()])
    assert events == [
        StreamStarted("s1", "demo"),
        TextDelta("Hello", 0),
        TextDelta(" world", 1),
        TextDelta("!", 2),
        UsageReport(5, 3, 8),
        FinishReason("stop"),
        Done(),
    ]
    assert finished


def test_native_seed_streaming_response_reads_flat_usage_metadata_error_and_done() -> None:
    events, finished = replay([(FIXTURES / "native" / "seed_streaming_response.sse").read_bytes()])
    assert events == [
        StreamStarted(None, None),
        TextDelta("Hello", 0),
        TextDelta(" world", 1),
        UsageReport(5, 2, 7),
        Metadata({"finishReason": "stop"}),
        FinishReason("stop"),
        ServerError(
            "upstream failed",
            "STREAM_ERROR",
            False,
            {"error": "upstream failed", "code": "STREAM_ERROR"},
        ),
        Done(),
    ]
    assert finished


def test_native_seed_done_true_with_usage_ends_the_stream() -> None:
    events, finished = replay([(FIXTURES / "native" / "seed_done_usage.sse").read_bytes()])
    assert events[-2:] == [UsageReport(12, 2, 14), Done()]
    assert finished


def test_native_seed_starter_without_done_is_not_finished() -> None:
    _, finished = replay([(FIXTURES / "native" / "seed_starter.sse").read_bytes()])
    assert not finished


# --- single frames ---------------------------------------------------------------------------


def test_native_empty_token_is_ignored() -> None:
    assert NativeDialect().parse(SSEEvent('{"token":""}')) is NOTHING


def test_native_malformed_json_is_skipped() -> None:
    [event] = NativeDialect().parse(SSEEvent('{"token": "B"', "token"))
    assert isinstance(event, Skipped) and "malformed JSON" in event.reason
    assert event.raw == '{"token": "B"'


def test_native_unknown_event_type_is_skipped() -> None:
    [event] = NativeDialect().parse(SSEEvent('{"x":1}', "surprise"))
    assert isinstance(event, Skipped) and "'surprise'" in event.reason


def test_native_unnamed_object_without_token_usage_or_done_is_skipped() -> None:
    [event] = NativeDialect().parse(SSEEvent('{"hello":"world"}'))
    assert isinstance(event, Skipped)


def test_native_ndjson_frame_is_skipped() -> None:
    [event] = NativeDialect().parse(NDJSONLine('{"token":"x"}'))
    assert isinstance(event, Skipped)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        pytest.param("overloaded", True, id="overloaded"),
        pytest.param("rate_limited", True, id="rate-limited"),
        pytest.param("503", True, id="status-503"),
        pytest.param("STREAM_ERROR", False, id="stream-error"),
        pytest.param("content_policy", False, id="policy"),
    ],
)
def test_native_error_event_code_decides_retryable(code: str, retryable: bool) -> None:
    data = json.dumps({"error": "boom", "code": code})
    [event] = NativeDialect().parse(SSEEvent(data, "error"))
    assert event == ServerError("boom", code, retryable, {"error": "boom", "code": code})


def test_native_error_event_explicit_retryable_flag_wins() -> None:
    data = '{"error":"boom","code":"STREAM_ERROR","retryable":true}'
    [event] = NativeDialect().parse(SSEEvent(data, "error"))
    assert isinstance(event, ServerError) and event.retryable


def test_native_reasoning_and_tool_call_events_are_read() -> None:
    dialect = NativeDialect()
    assert dialect.parse(SSEEvent('{"text":"hmm"}', "reasoning")) == [ReasoningDelta("hmm")]
    call = '{"id":"c1","name":"f","arguments":{"a":1}}'
    assert dialect.parse(SSEEvent(call, "tool-call")) == [ToolCallDone("c1", "f", '{"a":1}')]


def test_native_done_with_finish_reason_normalises_it() -> None:
    dialect = NativeDialect()
    assert dialect.parse(SSEEvent('{"finishReason":"max_tokens"}', "done")) == [
        FinishReason("length"),
        Done(),
    ]
    assert dialect.finished


# --- requests --------------------------------------------------------------------------------


def test_native_build_request_sends_seed_body_key_order() -> None:
    request = ChatRequest(
        messages=(ChatMessage("user", "t1"), ChatMessage("assistant", "a")),
        model="gpt-4",
        system_prompt="Be brief",
    )
    spec = NativeDialect().build_request("http://h/api/chat", request)
    assert (spec.method, spec.url) == ("POST", "http://h/api/chat")
    assert spec.headers["Content-Type"] == "application/json"
    body = json.loads(spec.body)
    assert list(body) == ["messages", "model", "systemPrompt", "stream"]
    assert body["messages"] == [
        {"role": "user", "content": "t1"},
        {"role": "assistant", "content": "a"},
    ]
    assert body["stream"] is True


def test_native_build_request_without_model_or_system_omits_them() -> None:
    spec = NativeDialect().build_request(
        "http://h/api/chat", ChatRequest((ChatMessage("user", "x"),))
    )
    assert list(json.loads(spec.body)) == ["messages", "stream"]
