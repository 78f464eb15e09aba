"""Edges of the dialects that no recorded fixture reaches: odd frames, sparse requests.

Each test names the rule it pins; together they keep `_wire` at 100% branch coverage (the gate
of `make test`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._dialect import (
    HEARTBEAT_ONLY,
    ChatMessage,
    ChatRequest,
    ImagePart,
    ToolCallPart,
    ToolSpec,
    function_tools,
    parse_arguments,
)
from aistream._wire._events import (
    ServerError,
    Skipped,
    SSEEvent,
    StreamEvent,
    TextDelta,
    ToolCallDone,
)
from aistream._wire._gemini import GeminiDialect, server_error
from aistream._wire._json import json_body, parser
from aistream._wire._native import NativeDialect
from aistream._wire._ollama import OllamaDialect
from aistream._wire._openai import OpenAIDialect
from aistream._wire._reader import StreamReader
from aistream._wire._responses import ResponsesDialect
from aistream._wire._sse import SSEDecoder

GEMINI = "https://generativelanguage.googleapis.com/v1beta"
PNG = ImagePart(data=b"\x89PNG", media_type="image/png")
CALL = ToolCallPart("c1", "get_weather", '{"city": "Paris"}')


def body_of(dialect: Any, endpoint: str, request: ChatRequest) -> Any:
    return json.loads(dialect.build_request(endpoint, request).body)


def sse(obj: Any, event: str = "message") -> SSEEvent:
    return SSEEvent(json.dumps(obj), event)


# --- requests: sparse tools, messages without text, tool results ------------------------------


def test_a_tool_without_description_or_parameters_sends_only_what_it_has() -> None:
    bare = ToolSpec("ping")
    request = ChatRequest((ChatMessage("user", "hi"),), "m", tools=(bare,))
    assert function_tools((bare,)) == [
        {"type": "function", "function": {"name": "ping", "parameters": {}}}
    ]
    anthropic = body_of(AnthropicDialect(), "https://x/v1/messages", request)
    assert anthropic["tools"] == [{"name": "ping", "input_schema": {"type": "object"}}]
    responses = body_of(ResponsesDialect(), "https://x/v1/responses", request)
    assert responses["tools"][0] == {
        "type": "function",
        "name": "ping",
        "parameters": {"type": "object", "properties": {}},
        "strict": False,
    }
    gemini = body_of(GeminiDialect(), GEMINI, request)
    assert gemini["tools"] == [{"functionDeclarations": [{"name": "ping"}]}]


def test_arguments_that_are_not_json_are_a_value_error_where_a_provider_needs_an_object() -> None:
    with pytest.raises(ValueError, match="Anthropic"):
        parse_arguments(ToolCallPart("c", "f", "not json"), "Anthropic")


def test_anthropic_sends_url_images_and_empty_system_and_tool_texts_are_left_out() -> None:
    request = ChatRequest(
        (
            ChatMessage("system", ""),
            ChatMessage("user", "look", images=(ImagePart(url="https://x/cat.png"),)),
            ChatMessage("assistant", "", tool_calls=(CALL,)),
            ChatMessage("tool", "", tool_call_id="c1"),
        ),
        "m",
    )
    body = body_of(AnthropicDialect(), "https://x/v1/messages", request)
    assert "system" not in body
    image = body["messages"][0]["content"][0]
    assert image == {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}
    assert body["messages"][-1]["content"] == [{"type": "tool_result", "tool_use_id": "c1"}]


def test_native_marks_a_failed_tool_result() -> None:
    request = ChatRequest(
        (
            ChatMessage("assistant", "", tool_calls=(CALL,)),
            ChatMessage("tool", "boom", tool_call_id="c1", is_error=True),
        )
    )
    body = body_of(NativeDialect(), "http://x/api/chat", request)
    assert body["messages"][-1] == {
        "role": "tool",
        "content": "boom",
        "toolCallId": "c1",
        "isError": True,
    }


def test_ollama_tool_result_without_a_known_tool_name_has_no_tool_name() -> None:
    request = ChatRequest((ChatMessage("tool", "42", tool_call_id="unknown"),), "m")
    body = body_of(OllamaDialect(), "http://x/api/chat", request)
    assert body["messages"] == [{"role": "tool", "content": "42"}]


def test_gemini_request_edges() -> None:
    call = ToolCallPart("c1", "get_weather", '{"city": "Paris"}')
    request = ChatRequest(
        (
            ChatMessage("system", ""),
            ChatMessage("user", ""),  # no parts: left out
            ChatMessage("user", "", images=(PNG,)),
            ChatMessage("assistant", "", tool_calls=(call, ToolCallPart("c2", "get_time"))),
            ChatMessage("tool", "not json", tool_call_id="c1"),
            ChatMessage("tool", '{"t": 1}', tool_call_id="c2"),
        ),
        "gemini-2.5-flash",
    )
    body = body_of(GeminiDialect(), GEMINI, request)
    assert "systemInstruction" not in body
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    results = body["contents"][-1]["parts"]  # one step's results together, in one turn
    assert [p["functionResponse"]["response"] for p in results] == [
        {"output": "not json"},
        {"output": {"t": 1}},
    ]
    with pytest.raises(ValueError, match="names no tool"):
        GeminiDialect().build_request(
            GEMINI, ChatRequest((ChatMessage("tool", "x", tool_call_id="nobody"),), "m")
        )
    with pytest.raises(ValueError, match="not URLs"):
        GeminiDialect().build_request(
            GEMINI,
            ChatRequest((ChatMessage("user", "x", images=(ImagePart(url="https://x"),)),), "m"),
        )


@pytest.mark.parametrize(
    ("options", "config"),
    [
        ({"generationConfig": {"topK": 3}}, {"topK": 3}),
        ({"response_format": {"type": "text"}}, None),
    ],
)
def test_gemini_takes_its_generation_config_and_a_text_response_format(
    options: dict[str, Any], config: dict[str, Any] | None
) -> None:
    request = ChatRequest((ChatMessage("user", "hi"),), "m", options=options)
    assert body_of(GeminiDialect(), GEMINI, request).get("generationConfig") == config


def test_gemini_a_json_schema_response_format_without_a_schema_is_a_value_error() -> None:
    options = {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}
    with pytest.raises(ValueError, match="cannot carry response_format"):
        GeminiDialect().build_request(
            GEMINI, ChatRequest((ChatMessage("user", "hi"),), "m", options=options)
        )


def test_responses_passes_a_json_schema_format_without_a_schema_object_as_given() -> None:
    value = {"type": "json_schema", "json_schema": "odd"}
    request = ChatRequest((ChatMessage("user", "hi"),), "m", options={"response_format": value})
    body = body_of(ResponsesDialect(), "https://x/v1/responses", request)
    assert body["text"]["format"] == value


def test_a_body_with_a_lone_surrogate_is_written_with_escapes() -> None:
    assert json_body({"t": "a\ud800"}) == b'{"t":"a\\ud800"}'


def test_choosing_orjson_when_it_is_missing_is_a_runtime_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aistream._wire._json._orjson_loads", None)
    with pytest.raises(RuntimeError, match="orjson is not installed"), parser("orjson"):
        pass


# --- streams: frames no fixture has --------------------------------------------------------------


def test_dialects_whose_events_are_named_or_lines_never_take_the_fast_path() -> None:
    assert AnthropicDialect().text_of(b"{}") is None
    assert OllamaDialect().text_of(b"{}") is None
    assert GeminiDialect().text_of(b"{}") is None
    assert ResponsesDialect().text_of(b"{}") is None


def test_native_unnamed_error_event_is_a_server_error() -> None:
    data = {"error": "overloaded", "code": "overloaded", "retryable": True}
    (event,) = NativeDialect().parse(sse(data))
    assert isinstance(event, ServerError) and event.message == "overloaded"


def test_openai_whole_calls_without_an_index_are_told_apart_by_id() -> None:
    dialect = OpenAIDialect()

    def delta(*calls: dict[str, Any]) -> SSEEvent:
        return sse({"choices": [{"index": 0, "delta": {"tool_calls": list(calls)}}]})

    dialect.parse(delta({"id": "a", "function": {"name": "f", "arguments": "{}"}}))
    dialect.parse(delta({"id": "a", "function": "not an object"}))  # continues a, adds nothing
    dialect.parse(delta({"id": "b", "function": {"name": "g", "arguments": "{}"}}))
    end = dialect.parse(
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    )
    assert [e for e in end if isinstance(e, ToolCallDone)] == [
        ToolCallDone("a", "f", "{}"),
        ToolCallDone("b", "g", "{}"),
    ]


def gemini_events(obj: dict[str, Any]) -> list[StreamEvent]:
    return list(GeminiDialect().parse(SSEEvent(json.dumps(obj))))


def test_gemini_odd_candidates_and_parts_are_skipped_or_ignored() -> None:
    extra = gemini_events({"candidates": [{"content": {"parts": [{"text": "a"}]}}, {}]})
    assert isinstance(extra[0], TextDelta) and isinstance(extra[-1], Skipped)
    assert gemini_events({"candidates": ["not an object"]}) == []
    assert gemini_events({"candidates": [{"content": {"parts": "none"}}]}) == []
    (skipped,) = gemini_events({"candidates": [{"content": {"parts": ["x"]}}]})
    assert isinstance(skipped, Skipped) and "not an object" in skipped.reason
    (nameless,) = gemini_events({"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]})
    assert isinstance(nameless, Skipped) and "without a name" in nameless.reason


def test_gemini_an_error_that_is_not_an_object_keeps_its_text() -> None:
    assert server_error("quota", {}) == ServerError("quota", None, False, {})
    assert server_error("", None).message == "gemini error"


def test_responses_odd_events() -> None:
    dialect = ResponsesDialect()
    (event,) = dialect.parse(SSEEvent(json.dumps({"delta": "hi"}), "response.output_text.delta"))
    assert event == TextDelta("hi")  # no "type": the SSE event name says it
    assert dialect.parse(SSEEvent(json.dumps({"type": "response.created"}))) == ()
    started = dialect.parse(SSEEvent(json.dumps({"type": "response.created", "response": {}})))
    assert started[0].stream_id is None  # type: ignore[union-attr]
    end = dialect.parse(SSEEvent(json.dumps({"type": "response.completed", "response": 1})))
    assert [type(e).__name__ for e in end] == ["FinishReason", "Done"]


# --- the reader and the decoder ------------------------------------------------------------------


class _ResumableOpenAI(OpenAIDialect):
    """OpenAI chunks with ids: a resumable dialect with a fast path (none ships today)."""

    resumable = True


def test_the_fast_path_keeps_the_id_an_earlier_event_set() -> None:
    texts: list[str] = []
    reader = StreamReader(_ResumableOpenAI(), lambda events: None, texts.append)
    chunk = 'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
    reader.feed(b"id: 7\n" + (chunk % "a").encode())  # an id: parsed, not the fast path
    assert reader.feed((chunk % "b").encode()) == 1  # the fast path, no id of its own
    assert (texts, reader.last_event_id) == (["b"], "7")  # "a" went to the sink, parsed


class _Beats(OllamaDialect):
    """A line framing whose every line is a keep-alive (none ships today; the reader allows it)."""

    def parse(self, frame: Any) -> Any:
        return HEARTBEAT_ONLY


def test_a_heartbeat_or_an_empty_line_released_at_eof_delivers_no_event() -> None:
    events: list[StreamEvent] = []
    beats: list[None] = []
    reader = StreamReader(_Beats(), events.extend, on_heartbeat=lambda: beats.append(None))
    reader.feed(b'{"keep": "alive"}')
    reader.eof()  # the unterminated last line is released at the end
    assert (beats, events) == ([None], [])
    quiet = StreamReader(_Beats(), events.extend)  # no heartbeat listener: nothing to call
    quiet.feed(b"{}")
    quiet.eof()
    lines = StreamReader(OllamaDialect(), events.extend)
    lines.feed(b'{"message": {"content": ""}}')  # parses to no event
    lines.eof()
    assert events == []


def test_an_id_with_a_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    (event,) = decoder.feed(b"id:a\0b\ndata: x\n\n")  # no space: the general field path
    assert event.id is None or event.id == ""
