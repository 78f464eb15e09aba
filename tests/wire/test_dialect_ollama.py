"""OllamaDialect: tools, thinking, errors, requests (its fixtures: test_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

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
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._native import NativeDialect
from aistream._wire._ndjson import NDJSONDecoder
from aistream._wire._ollama import OllamaDialect
from aistream._wire._registry import dialect_factory
from tests.wire.replay import replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def replay(chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(OllamaDialect(), chunks)


def test_ollama_basic_fixture_gives_exact_events() -> None:
    events, finished = replay([(FIXTURES / "ollama" / "basic.ndjson").read_bytes()])
    assert events == [
        TextDelta("The"),
        TextDelta(" sky"),
        TextDelta(" is"),
        TextDelta(" blue"),
        TextDelta("."),
        UsageReport(26, 282),
        FinishReason("stop"),
        Done(),
    ]
    assert finished


def test_ollama_no_final_newline_finishes_from_eof() -> None:
    raw = (FIXTURES / "ollama" / "no_final_newline.ndjson").read_bytes()
    decoder, dialect = NDJSONDecoder(), OllamaDialect()
    for line in decoder.feed(raw):
        dialect.parse(line)
    assert not dialect.finished
    [last] = decoder.eof()
    assert dialect.parse(last)[-1] == Done()
    assert dialect.finished


def test_ollama_thinking_comes_as_reasoning_before_text() -> None:
    events, _ = replay([(FIXTURES / "ollama" / "thinking.ndjson").read_bytes()])
    assert events[:4] == [
        ReasoningDelta("The user"),
        ReasoningDelta(" wants a greeting."),
        TextDelta("Hello"),
        TextDelta("!"),
    ]


# --- single lines ----------------------------------------------------------------------------


def line(obj: object) -> NDJSONLine:
    return NDJSONLine(json.dumps(obj))


def test_ollama_empty_content_gives_shared_empty_list() -> None:
    frame = line({"message": {"role": "assistant", "content": ""}, "done": False})
    assert OllamaDialect().parse(frame) is NOTHING


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"message":{"role":"assistant","content":" the', id="cut-json"),
        pytest.param("[1, 2, 3]", id="not-an-object"),
        pytest.param('{"model":"m","done":false}', id="no-message"),
    ],
)
def test_ollama_unreadable_line_is_skipped(text: str) -> None:
    [event] = OllamaDialect().parse(NDJSONLine(text))
    assert isinstance(event, Skipped) and event.raw == text


def test_ollama_done_without_reason_or_counts_is_stop() -> None:
    dialect = OllamaDialect()
    assert dialect.parse(line({"done": True})) == [FinishReason("stop"), Done()]
    assert dialect.finished


def test_ollama_done_reason_length_is_kept() -> None:
    events = OllamaDialect().parse(line({"done": True, "done_reason": "length", "eval_count": 8}))
    assert events == [UsageReport(None, 8), FinishReason("length"), Done()]


@pytest.mark.parametrize(
    ("message", "retryable"),
    [
        pytest.param("server busy, please try again.", True, id="busy"),
        pytest.param("model runner overloaded", True, id="overloaded"),
        pytest.param("upstream timed out", True, id="timed-out"),
        pytest.param("service unavailable", True, id="unavailable"),
        pytest.param("model 'nope' not found", False, id="not-found"),
        pytest.param("unexpected EOF", False, id="crash"),
    ],
)
def test_ollama_error_line_is_retryable_only_when_transient(message: str, retryable: bool) -> None:
    [event] = OllamaDialect().parse(line({"error": message}))
    assert event == ServerError(message, None, retryable, {"error": message})


def test_ollama_error_object_from_a_proxy_keeps_message_and_code() -> None:
    [event] = OllamaDialect().parse(line({"error": {"message": "rate limited", "code": "429"}}))
    assert isinstance(event, ServerError)
    assert (event.message, event.code) == ("rate limited", "429")


def test_ollama_tool_call_string_arguments_are_kept_as_is() -> None:
    call = {"function": {"name": "f", "arguments": '{"a": 1}'}}
    frame = line({"message": {"role": "assistant", "content": "", "tool_calls": [call]}})
    assert OllamaDialect().parse(frame) == [ToolCallDone("call_0", "f", '{"a": 1}')]


def test_ollama_tool_call_without_name_is_skipped() -> None:
    frame = line({"message": {"content": "", "tool_calls": [{"function": {"arguments": {}}}]}})
    [event] = OllamaDialect().parse(frame)
    assert isinstance(event, Skipped)


def test_ollama_synthesised_tool_call_ids_are_stable_across_attempts() -> None:
    raw = (FIXTURES / "ollama" / "tool_calls.ndjson").read_bytes()
    assert replay([raw]) == replay([raw])


def test_ollama_sse_frame_is_skipped() -> None:
    [event] = OllamaDialect().parse(SSEEvent("{}"))
    assert isinstance(event, Skipped)


# --- requests and selection ------------------------------------------------------------------


def test_ollama_build_request_puts_system_first_and_moves_sampling_into_options() -> None:
    request = ChatRequest(
        messages=(ChatMessage("user", "why is the sky blue?"),),
        model="llama3.2",
        system_prompt="Be brief.",
        options={
            "temperature": 0,
            "max_tokens": 50,
            "options": {"num_ctx": 8192},
            "keep_alive": "5m",
            "think": True,
        },
    )
    spec = OllamaDialect().build_request("http://localhost:11434/api/chat", request)
    assert (spec.method, spec.url) == ("POST", "http://localhost:11434/api/chat")
    assert spec.headers["Content-Type"] == "application/json"
    assert json.loads(spec.body) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "why is the sky blue?"},
        ],
        "keep_alive": "5m",
        "think": True,
        "options": {"temperature": 0, "num_predict": 50, "num_ctx": 8192},
        "stream": True,
    }


def test_ollama_build_request_without_options_sends_no_options_object() -> None:
    spec = OllamaDialect().build_request(
        "http://h/api/chat", ChatRequest((ChatMessage("user", "x"),))
    )
    assert json.loads(spec.body) == {"messages": [{"role": "user", "content": "x"}], "stream": True}


def test_ollama_is_chosen_only_explicitly() -> None:
    assert dialect_factory("auto", "http://localhost:11434/api/chat") is NativeDialect
    assert dialect_factory("ollama", "http://localhost:11434/api/chat") is OllamaDialect
