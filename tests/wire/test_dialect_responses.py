"""ResponsesDialect: the derived finish reason, both error shapes, the resume cursor, the
request body and its options (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path
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
from aistream._wire._registry import dialect_factory
from aistream._wire._responses import ResponsesDialect
from tests.wire.replay import replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(ResponsesDialect(), chunks)


def event(obj: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps(obj), str(obj.get("type", "message")))


def test_responses_text_fixture_gives_exact_events() -> None:
    events, _ = replay([(FIXTURES / "responses" / "text.sse").read_bytes()])
    assert events[0] == StreamStarted(None, "gpt-5.1-2025-11-13")  # not background: no id
    assert events[-3:] == [UsageReport(299, 12, 311), FinishReason("stop"), Done()]
    assert all(type(e) is TextDelta for e in events[1:-3])


# --- events -----------------------------------------------------------------------------------


def test_responses_events_are_told_apart_by_json_type_without_event_lines() -> None:
    dialect = ResponsesDialect()
    frame = SSEEvent(json.dumps({"type": "response.output_text.delta", "delta": "hi"}))
    assert dialect.parse(frame) == [TextDelta("hi")]


def test_responses_empty_delta_and_quiet_events_give_nothing() -> None:
    dialect = ResponsesDialect()
    assert dialect.parse(event({"type": "response.output_text.delta", "delta": ""})) is NOTHING
    assert dialect.parse(event({"type": "response.content_part.added"})) is NOTHING


def test_responses_refusal_is_reply_text_and_reasoning_text_is_reasoning() -> None:
    dialect = ResponsesDialect()
    assert dialect.parse(event({"type": "response.refusal.delta", "delta": "No."})) == [
        TextDelta("No.")
    ]
    assert dialect.parse(event({"type": "response.reasoning_text.delta", "delta": "hm"})) == [
        ReasoningDelta("hm")
    ]


def test_responses_unknown_event_and_bad_frames_are_skipped() -> None:
    dialect = ResponsesDialect()
    [skipped] = dialect.parse(event({"type": "response.web_search_call.searching"}))
    assert isinstance(skipped, Skipped) and "web_search_call" in skipped.reason
    assert isinstance(dialect.parse(SSEEvent("{nope")), list)
    assert type(dialect.parse(SSEEvent("{nope"))[0]) is Skipped
    assert type(dialect.parse(NDJSONLine("{}"))[0]) is Skipped


def test_responses_tool_call_comes_from_the_done_item_with_call_id_not_item_id() -> None:
    dialect = ResponsesDialect()
    item = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "f",
        "arguments": '{"x":1}',
    }
    assert dialect.parse(event({"type": "response.output_item.done", "item": item})) == [
        ToolCallDone("call_1", "f", '{"x":1}')
    ]
    nameless = {**item, "name": ""}
    [skipped] = dialect.parse(event({"type": "response.output_item.done", "item": nameless}))
    assert type(skipped) is Skipped


@pytest.mark.parametrize(
    ("details", "output", "expected"),
    [
        (None, [], "stop"),
        ({"reason": "max_output_tokens"}, [], "length"),
        ({"reason": "content_filter"}, [], "content_filter"),
        (None, [{"type": "function_call", "call_id": "c", "name": "f"}], "tool_calls"),
    ],
)
def test_responses_finish_reason_is_derived(details: Any, output: Any, expected: str) -> None:
    kind = "response.incomplete" if details else "response.completed"
    response = {"incomplete_details": details, "output": output, "usage": None}
    events = ResponsesDialect().parse(event({"type": kind, "response": response}))
    assert events == [FinishReason(expected), Done()]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"type": "error", "code": "server_error", "message": "oops", "param": None},
            ("oops", "server_error", True),
        ),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_prompt"}},
            ("responses error invalid_prompt", "invalid_prompt", False),
        ),
        (
            {"type": "response.failed", "response": {"error": {"code": "server_error"}}},
            ("responses error server_error", "server_error", True),
        ),
        (
            {"type": "response.failed", "response": {"error": None}},
            ("the response failed without an error object", None, False),
        ),
    ],
)
def test_responses_errors_in_both_shapes(obj: dict[str, Any], expected: tuple[Any, ...]) -> None:
    [error] = ResponsesDialect().parse(event(obj))
    assert isinstance(error, ServerError)
    assert (error.message, error.code, error.retryable) == expected


# --- resume -----------------------------------------------------------------------------------


def test_responses_cursor_only_for_a_background_response() -> None:
    foreground = ResponsesDialect()
    replay_through(foreground, [(FIXTURES / "responses" / "text.sse").read_bytes()])
    assert foreground.cursor() is None
    background = ResponsesDialect()
    raw = (FIXTURES / "responses" / "background.sse").read_bytes()
    cut = raw[: raw.index(b'"sequence_number":9,')]
    replay_through(background, [cut])
    assert background.cursor() == "resp_6840c0ffee0ddba11c0ffee0ddba11c0ffee0ddba11c0ffee00/8"


def test_responses_background_response_announces_its_id_and_is_cancelled_by_post() -> None:
    events, _ = replay([(FIXTURES / "responses" / "background.sse").read_bytes()])
    response_id = "resp_6840c0ffee0ddba11c0ffee0ddba11c0ffee0ddba11c0ffee00"
    assert events[0] == StreamStarted(response_id, "gpt-5.1-2025-11-13")
    spec = ResponsesDialect.cancel_request("https://api.openai.com/v1/responses", response_id)
    assert (spec.method, spec.url) == (
        "POST",
        f"https://api.openai.com/v1/responses/{response_id}/cancel",
    )


def test_responses_resume_request_is_a_get_starting_after_the_cursor_and_drops_repeats() -> None:
    dialect = ResponsesDialect()
    post = dialect.build_request("https://api.openai.com/v1/responses", ChatRequest(()))
    resumed = ResponsesDialect()
    spec = resumed.resume_request(post, "resp_1/8")
    assert (spec.method, spec.url, spec.body) == (
        "GET",
        "https://api.openai.com/v1/responses/resp_1?stream=true&starting_after=8",
        b"",
    )
    assert resumed.cursor() == "resp_1/8"
    again = {"type": "response.output_text.delta", "delta": "x", "sequence_number": 8}
    assert resumed.parse(event(again)) is NOTHING
    assert resumed.parse(event({**again, "sequence_number": 9})) == [TextDelta("x")]
    assert resumed.cursor() == "resp_1/9"


# --- the request --------------------------------------------------------------------------------


def body(request: ChatRequest) -> dict[str, Any]:
    spec = ResponsesDialect().build_request("https://api.openai.com/v1/responses", request)
    assert (spec.method, spec.url) == ("POST", "https://api.openai.com/v1/responses")
    parsed: dict[str, Any] = json.loads(spec.body)
    return parsed


def test_responses_request_has_instructions_input_and_stream() -> None:
    request = ChatRequest(
        (ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"), ChatMessage("user", "2?")),
        model="gpt-5.1",
        system_prompt="Be brief.",
        options={"max_tokens": 50, "temperature": 0, "background": True},
    )
    assert body(request) == {
        "model": "gpt-5.1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "2?"},
        ],
        "max_output_tokens": 50,
        "temperature": 0,
        "background": True,
        "stream": True,
    }


def test_responses_response_format_becomes_text_format() -> None:
    schema = {"name": "x", "schema": {"type": "object"}, "strict": True}
    options = {"response_format": {"type": "json_schema", "json_schema": schema}}
    assert body(ChatRequest((), options=options))["text"] == {
        "format": {"type": "json_schema", **schema}
    }


@pytest.mark.parametrize("option", ["stop", "seed", "n", "frequency_penalty"])
def test_responses_option_without_a_field_is_a_value_error(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        body(ChatRequest((), options={option: 1}))


def test_auto_picks_responses_for_a_path_ending_in_responses() -> None:
    assert dialect_factory("auto", "https://api.openai.com/v1/responses/") is ResponsesDialect


def test_responses_resume_and_cancel_keep_the_endpoint_query() -> None:
    """Azure OpenAI needs its api-version on every request."""
    endpoint = "https://x.openai.azure.com/openai/v1/responses?api-version=preview"
    post = ResponsesDialect().build_request(endpoint, ChatRequest(()))
    spec = ResponsesDialect().resume_request(post, "resp_1/3")
    assert spec.url == (
        "https://x.openai.azure.com/openai/v1/responses/resp_1"
        "?api-version=preview&stream=true&starting_after=3"
    )
    cancel = ResponsesDialect.cancel_request(endpoint, "resp_1")
    assert cancel.url == (
        "https://x.openai.azure.com/openai/v1/responses/resp_1/cancel?api-version=preview"
    )
