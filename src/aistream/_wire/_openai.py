"""OpenAI-compatible chat completions streaming (OpenAI, vLLM, llama.cpp, LM Studio). Stdlib only.

Reads ``choices[0].delta`` (content, reasoning_content / reasoning, tool_calls), finish_reason,
the usage chunk with empty ``choices``, ``{"error": ...}`` inside the stream, and ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from ._dialect import NOTHING, ChatRequest, RequestSpec, error_message, json_body, loads_object
from ._events import (
    Done,
    FinishReason,
    Frame,
    ReasoningDelta,
    ServerError,
    Skipped,
    SSEEvent,
    StreamEvent,
    TextDelta,
    ToolCallDone,
)
from ._native import is_transient, normalize_finish, usage_report


class OpenAIDialect:
    """Parser state for one attempt of an OpenAI-format stream."""

    name: ClassVar[str] = "openai"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = False

    __slots__ = ("_calls", "_finished")

    def __init__(self) -> None:
        self._finished = False
        self._calls: dict[int, list[str]] = {}  # tool-call index -> [id, name, arguments...]

    @property
    def finished(self) -> bool:
        return self._finished

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.system_prompt:
            messages.insert(0, {"role": "system", "content": request.system_prompt})
        payload: dict[str, Any] = {"messages": messages}
        if request.model:
            payload["model"] = request.model
        payload.update(request.options)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def parse(self, frame: Frame) -> list[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("openai expects SSE frames", frame.text[:200])]
        data = frame.data
        if data == "[DONE]":
            self._finished = True
            return [Done()]
        obj = loads_object(data)
        if obj is None:
            return [Skipped("malformed JSON in OpenAI chunk", data[:200])]
        choices = obj.get("choices")
        if choices and type(choices) is list:
            fast = _plain_text(obj, choices)
            if fast is not None:
                return [TextDelta(fast)] if fast else NOTHING
            return self._parse_full(obj, choices, data)
        if obj.get("error"):
            message, code = error_message(obj["error"])
            return [ServerError(message, code, is_transient(code), obj)]
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            return [usage_report(usage)]
        return [Skipped("OpenAI chunk without choices, usage or error", data[:200])]

    def _parse_full(self, obj: dict[str, Any], choices: list[Any], data: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for choice in choices:
            if type(choice) is not dict:
                events.append(Skipped("OpenAI choice is not an object", data[:200]))
                continue
            if choice.get("index", 0) != 0:
                events.append(Skipped("choice index > 0 ignored (n > 1 not supported)", data[:200]))
                continue
            delta = choice.get("delta")
            if type(delta) is dict:
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if type(reasoning) is str and reasoning:
                    events.append(ReasoningDelta(reasoning))
                content = delta.get("content")
                if type(content) is str and content:
                    events.append(TextDelta(content))
                calls = delta.get("tool_calls")
                if type(calls) is list:
                    self._collect_tool_calls(calls)
            reason = choice.get("finish_reason")
            if type(reason) is str:
                events.extend(self._complete_tool_calls())
                events.append(FinishReason(normalize_finish(reason)))
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            events.append(usage_report(usage))
        return events

    def _collect_tool_calls(self, calls: list[Any]) -> None:
        for call in calls:
            if type(call) is not dict:
                continue
            slot = self._calls.setdefault(int(call.get("index", 0)), ["", ""])
            if call.get("id"):
                slot[0] = str(call["id"])
            function = call.get("function")
            if type(function) is dict:
                if function.get("name"):
                    slot[1] = str(function["name"])
                if type(function.get("arguments")) is str:
                    slot.append(function["arguments"])

    def _complete_tool_calls(self) -> list[StreamEvent]:
        done: list[StreamEvent] = [
            ToolCallDone(slot[0], slot[1], "".join(slot[2:]) or "{}")
            for _, slot in sorted(self._calls.items())
        ]
        self._calls.clear()
        return done


def _plain_text(obj: dict[str, Any], choices: list[Any]) -> str | None:
    """The text of a chunk that carries only a text delta (the hot path), else None."""
    if len(choices) != 1 or obj.get("usage"):
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or choice.get("index", 0) != 0 or "tool_calls" in delta:
        return None
    if delta.get("reasoning_content") or delta.get("reasoning"):
        return None
    content = delta.get("content")
    return content if type(content) is str else ""
