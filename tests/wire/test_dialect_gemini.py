"""GeminiDialect: parts, usage snapshots, finish reasons, errors with RetryInfo, the URL, the
request body and its options (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aistream._wire._dialect import NOTHING, ChatMessage, ChatRequest
from aistream._wire._events import (
    Done,
    FinishReason,
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
from aistream._wire._gemini import GeminiDialect, retry_delay, stream_url
from aistream._wire._registry import dialect_factory
from tests.wire.replay import replay_through

BASE = "https://generativelanguage.googleapis.com/v1beta"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(GeminiDialect(), chunks)


def chunk(*parts: dict[str, Any], finish: str | None = None, **extra: Any) -> SSEEvent:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return SSEEvent(json.dumps({"candidates": [candidate], **extra}))


# --- parts, usage, finish ---------------------------------------------------------------------


def test_gemini_empty_text_and_a_bare_signature_emit_nothing() -> None:
    dialect = GeminiDialect()
    assert dialect.parse(chunk({"text": "", "thoughtSignature": "c2ln"})) is NOTHING
    assert dialect.parse(chunk({"thoughtSignature": "c2ln"})) is NOTHING


def test_gemini_thought_parts_are_reasoning_never_text() -> None:
    events = GeminiDialect().parse(chunk({"text": "hmm", "thought": True}, {"text": "Yes"}))
    assert events == [ReasoningDelta("hmm"), TextDelta("Yes")]


def test_gemini_usage_is_a_snapshot_with_thoughts_in_the_output() -> None:
    dialect = GeminiDialect()
    usage = {"promptTokenCount": 4, "candidatesTokenCount": 3, "thoughtsTokenCount": 10}
    assert dialect.parse(SSEEvent(json.dumps({"usageMetadata": usage}))) == [
        UsageReport(4, 13, None)
    ]
    traffic = {"usageMetadata": {"trafficType": "ON_DEMAND"}}
    assert dialect.parse(SSEEvent(json.dumps(traffic))) is NOTHING


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("SOMETHING_NEW", "something_new"),
    ],
)
def test_gemini_finish_reason_is_normalised(reason: str, expected: str) -> None:
    dialect = GeminiDialect()
    assert dialect.parse(chunk({"text": "x"}, finish=reason)) == [
        TextDelta("x"),
        FinishReason(expected),
        Done(),
    ]
    assert dialect.finished


def test_gemini_stop_after_a_function_call_is_tool_calls_and_ids_differ() -> None:
    dialect = GeminiDialect()
    call = {"functionCall": {"name": "f", "args": {"a": 1}}}
    events = dialect.parse(chunk(call, call, finish="STOP", responseId="r1"))
    assert events == [
        StreamStarted("r1", None),
        ToolCallDone("call_r1_1", "f", '{"a":1}'),
        ToolCallDone("call_r1_2", "f", '{"a":1}'),
        FinishReason("tool_calls"),
        Done(),
    ]
    given = {"functionCall": {"id": "abc", "name": "g"}}
    assert GeminiDialect().parse(chunk(given)) == [ToolCallDone("abc", "g", "{}")]


def test_gemini_blocked_prompt_ends_as_content_filter() -> None:
    obj = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    assert GeminiDialect().parse(SSEEvent(json.dumps(obj))) == [
        FinishReason("content_filter"),
        Done(),
    ]


def test_gemini_odd_frames_are_skipped() -> None:
    dialect = GeminiDialect()
    assert type(dialect.parse(SSEEvent("{nope"))[0]) is Skipped
    assert type(dialect.parse(SSEEvent("{}"))[0]) is Skipped
    assert type(dialect.parse(NDJSONLine("{}"))[0]) is Skipped
    [skipped] = dialect.parse(chunk({"inlineData": {"mimeType": "image/png", "data": ""}}))
    assert type(skipped) is Skipped and "inlineData" in skipped.reason


# --- errors -----------------------------------------------------------------------------------

QUOTA = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.4s"},
        ],
    }
}


def test_gemini_in_stream_error_is_retried_by_status_with_its_retry_delay() -> None:
    [error] = GeminiDialect().parse(SSEEvent(json.dumps(QUOTA)))
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable, error.retry_after) == ("RESOURCE_EXHAUSTED", True, 34.4)
    bad = {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    [error] = GeminiDialect().parse(SSEEvent(json.dumps(bad)))
    assert isinstance(error, ServerError)
    assert (error.message, error.code, error.retryable) == ("bad", "INVALID_ARGUMENT", False)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [("34.4s", 34.4), ("2s", 2.0), ({"seconds": 3, "nanos": 500000000}, 3.5), ("soon", None)],
)
def test_retry_delay_reads_google_durations(delay: Any, expected: float | None) -> None:
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    assert retry_delay({"error": {"details": [detail]}}) == expected
    assert retry_delay({"error": "x"}) is None


# --- the request --------------------------------------------------------------------------------


def test_gemini_url_from_a_base_or_a_full_endpoint() -> None:
    assert (
        stream_url(BASE, "gemini-2.5-flash")
        == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    full = f"{BASE}/models/gemini-2.5-pro:streamGenerateContent"
    assert stream_url(full, "ignored") == full + "?alt=sse"
    assert stream_url(full + "?alt=json&x=1", None) == full + "?x=1&alt=sse"
    with pytest.raises(ValueError, match="model"):
        stream_url(BASE, None)


def body(request: ChatRequest) -> dict[str, Any]:
    spec = GeminiDialect().build_request(BASE, request)
    assert spec.method == "POST" and spec.url.endswith(":streamGenerateContent?alt=sse")
    parsed: dict[str, Any] = json.loads(spec.body)
    return parsed


def test_gemini_request_has_contents_system_instruction_and_generation_config() -> None:
    request = ChatRequest(
        (
            ChatMessage("system", "Answer in French."),
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Salut !"),
            ChatMessage("user", "2?"),
        ),
        model="gemini-2.5-flash",
        system_prompt="Be brief.",
        options={"temperature": 0.5, "top_p": 0.9, "max_tokens": 64, "stop": "END", "seed": 3},
    )
    assert body(request) == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Salut !"}]},
            {"role": "user", "parts": [{"text": "2?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nAnswer in French."}]},
        "generationConfig": {
            "temperature": 0.5,
            "topP": 0.9,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
            "seed": 3,
        },
    }


def test_gemini_takes_its_own_names_and_json_response_formats() -> None:
    schema = {"type": "object"}
    options = {
        "thinkingConfig": {"includeThoughts": True},
        "safetySettings": [],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    assert body(ChatRequest((), model="m", options=options)) == {
        "contents": [],
        "safetySettings": [],
        "generationConfig": {
            "thinkingConfig": {"includeThoughts": True},
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
        },
    }


@pytest.mark.parametrize("options", [{"logit_bias": {}}, {"response_format": {"type": "x"}}])
def test_gemini_option_without_a_field_is_a_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Gemini"):
        body(ChatRequest((), model="m", options=options))


def test_auto_picks_gemini_for_a_stream_generate_content_path() -> None:
    url = f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert dialect_factory("auto", url) is GeminiDialect


def test_gemini_call_ids_without_a_response_id_still_differ_between_replies() -> None:
    call = chunk({"functionCall": {"name": "f"}}, {"functionCall": {"name": "f"}})
    first, second = GeminiDialect().parse(call), GeminiDialect().parse(call)
    ids = [e.id for e in [*first, *second] if isinstance(e, ToolCallDone)]
    assert len(set(ids)) == 4 and ids[0].endswith("_1") and ids[1].endswith("_2")
    assert ids[0].rsplit("_", 1)[0] == ids[1].rsplit("_", 1)[0]  # one prefix per reply
