"""OpenAI-compatible chat completions streaming (OpenAI, vLLM, llama.cpp, LM Studio). Stdlib only.

Reads:

- ``choices[0].delta``: ``content`` (a string, or Mistral's list of text / thinking parts) and
  ``refusal`` (the model's refusal, shown as reply text) → text; ``reasoning_content`` /
  ``reasoning`` (DeepSeek, vLLM, OpenRouter, Ollama's ``/v1``) → reasoning; ``tool_calls``
  fragments → one complete call each at ``finish_reason`` (or at ``[DONE]`` for servers that
  send none);
- ``finish_reason``; usage wherever a chunk carries it (normally the last chunk, with empty
  ``choices``);
- ``{"error": ...}`` inside the stream (retryable when its code or type names a transient
  failure, or as its ``retryable`` says: an aistream server's extension); ``[DONE]``.

Not expressible, hence `Skipped` (logged, never silently dropped): choices other than index 0
(``n > 1``) and unknown non-empty delta fields (legacy ``function_call``, ``audio``, …), each
reported once per stream; chunks that are not chunk objects. A chunk with empty ``choices`` and
no usage (Azure's ``prompt_filter_results``) is `Metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from ._dialect import (
    NOTHING,
    ChatMessage,
    ChatRequest,
    RequestSpec,
    error_message,
    function_tools,
    is_transient,
    normalize_finish,
    usage_report,
)
from ._events import (
    Done,
    FinishReason,
    Frame,
    Metadata,
    ReasoningDelta,
    ServerError,
    Skipped,
    SSEEvent,
    StreamEvent,
    TextDelta,
    ToolCallDone,
)
from ._json import json_body, loads_object, loads_object_bytes

#: Delta fields read here, or known to carry nothing for the reply (reported only if unknown).
_KNOWN_DELTA = frozenset(
    {
        "role",
        "content",
        "refusal",
        "reasoning_content",
        "reasoning",
        "reasoning_details",
        "tool_calls",
    }
)


class OpenAIDialect:
    """Parser state for one attempt of an OpenAI-format stream.

    Not resumable: chunks carry no ids, so a dropped reply restarts from the beginning.
    """

    name: ClassVar[str] = "openai"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = False

    __slots__ = ("_calls", "_finished", "_reported")

    def __init__(self) -> None:
        self._finished = False
        self._calls: dict[int, _Call] = {}  # tool calls being assembled, by their index
        self._reported: set[str] = set()  # what was already reported as Skipped

    @property
    def finished(self) -> bool:
        return self._finished

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        messages = [_message(m) for m in request.messages]
        if request.system_prompt:
            messages.insert(0, {"role": "system", "content": request.system_prompt})
        payload: dict[str, Any] = {"messages": messages}
        if request.model:
            payload["model"] = request.model
        if request.tools:
            payload["tools"] = function_tools(request.tools)
        payload.update(request.options)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("openai expects SSE frames", frame.text[:200])]
        data = frame.data
        if data == "[DONE]":
            self._finished = True
            return [*self._complete_tool_calls(), Done()] if self._calls else [Done()]
        obj = loads_object(data)
        if obj is None:
            return [Skipped("malformed JSON in OpenAI chunk", data[:200])]
        choices = obj.get("choices")
        if choices and type(choices) is list:
            fast = _plain_text(obj, choices)
            if fast is not None:
                return [TextDelta(fast)] if fast else NOTHING
        error = obj.get("error")
        if error:
            message, code = error_message(error)
            flag = error.get("retryable") if isinstance(error, Mapping) else None
            retryable = flag if isinstance(flag, bool) else is_transient(code)
            return [ServerError(message, code, retryable, obj)]
        if choices and type(choices) is list:
            return self._parse_full(obj, choices, data)
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            return [usage_report(usage)]
        if type(choices) is list:
            return [Metadata(obj)]  # a chunk with nothing for the reply
        return [Skipped("OpenAI chunk without choices, usage or error", data[:200])]

    def text_of(self, data: bytes) -> str | None:
        obj = loads_object_bytes(data)
        if obj is None:
            return None
        choices = obj.get("choices")
        if not choices or type(choices) is not list:
            return None
        return _plain_text(obj, choices)

    def _parse_full(
        self, obj: dict[str, Any], choices: list[Any], data: str
    ) -> Sequence[StreamEvent]:
        events: list[StreamEvent] = []
        for choice in choices:
            if type(choice) is not dict:
                events.append(Skipped("OpenAI choice is not an object", data[:200]))
                continue
            if choice.get("index", 0) != 0:
                self._report_once(events, "choices other than index 0 (n > 1) are ignored", data)
                continue
            delta = choice.get("delta")
            if type(delta) is dict:
                self._delta(delta, events, data)
            reason = choice.get("finish_reason")
            if type(reason) is str and reason:
                events.extend(self._complete_tool_calls())
                events.append(FinishReason(normalize_finish(reason)))
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            events.append(usage_report(usage))
        return events or NOTHING

    def _delta(self, delta: dict[str, Any], events: list[StreamEvent], data: str) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if type(reasoning) is str and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if type(content) is str and content:
            events.append(TextDelta(content))
        elif type(content) is list:
            self._content_parts(content, events, data)
        refusal = delta.get("refusal")
        if type(refusal) is str and refusal:
            events.append(TextDelta(refusal))
        calls = delta.get("tool_calls")
        if type(calls) is list:
            for call in calls:
                if type(call) is dict:
                    self._collect_tool_call(call)
                else:
                    events.append(Skipped("OpenAI tool call is not an object", data[:200]))
        for key, value in delta.items():
            if value and key not in _KNOWN_DELTA:
                self._report_once(events, f"OpenAI delta field {key!r} is not supported", data)

    def _content_parts(self, parts: list[Any], events: list[StreamEvent], data: str) -> None:
        """Content sent as a list of parts (Mistral): text parts, thinking parts as reasoning."""
        for part in parts:
            kind = part.get("type") if type(part) is dict else None
            if kind == "text":
                events.extend(TextDelta(t) for t in _texts([part]) if t)
            elif kind == "thinking":
                thinking = part["thinking"] if type(part.get("thinking")) is str else None
                texts = [thinking] if thinking else _texts(part.get("thinking"))
                events.extend(ReasoningDelta(t) for t in texts if t)
            else:
                self._report_once(events, f"OpenAI content part {kind!r} is not supported", data)

    def _collect_tool_call(self, call: dict[str, Any]) -> None:
        """Add one tool-call fragment to the call it continues (by index, else by id)."""
        index = call.get("index")
        call_id = call.get("id")
        if type(index) is not int:  # some servers send whole calls without an index
            index = next((i for i, c in self._calls.items() if call_id and c.id == call_id), None)
            if index is None:  # a new id starts a new call; no id continues the last one
                index = (max(self._calls) + bool(call_id)) if self._calls else 0
        slot = self._calls.get(index)
        if slot is None:
            slot = self._calls[index] = _Call(index)
        if call_id:
            slot.id = str(call_id)
        function = call.get("function")
        if type(function) is dict:
            name, arguments = function.get("name"), function.get("arguments")
            if type(name) is str and name:
                slot.name = name
            if type(arguments) is str:
                slot.parts.append(arguments)
            elif type(arguments) is dict:  # a whole object instead of JSON text
                slot.parts.append(json_body(arguments).decode())

    def _complete_tool_calls(self) -> Sequence[StreamEvent]:
        done: list[StreamEvent] = []
        for _, call in sorted(self._calls.items()):
            arguments = "".join(call.parts) or "{}"
            if call.name:
                done.append(ToolCallDone(call.id or f"call_{call.index}", call.name, arguments))
            else:
                done.append(Skipped("OpenAI tool call without a function name", arguments[:200]))
        self._calls.clear()
        return done

    def _report_once(self, events: list[StreamEvent], reason: str, data: str) -> None:
        if reason not in self._reported:
            self._reported.add(reason)
            events.append(Skipped(reason + " (reported once per stream)", data[:200]))


def _message(m: ChatMessage) -> dict[str, Any]:
    """A message as chat completions takes it: assistant ``tool_calls``, ``role: "tool"`` with
    ``tool_call_id``, user images as ``image_url`` parts (a URL or a ``data:`` URL)."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        return {"role": m.role, "content": m.content or None, "tool_calls": calls}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        parts += [{"type": "image_url", "image_url": {"url": i.data_url()}} for i in m.images]
        return {"role": m.role, "content": parts}
    return {"role": m.role, "content": m.content}


class _Call:
    """A tool call being assembled from its fragments."""

    __slots__ = ("id", "index", "name", "parts")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.parts: list[str] = []


def _texts(parts: Any) -> list[str]:
    """The ``text`` of each ``{"type": "text"}`` part of a list (anything else: none)."""
    if type(parts) is not list:
        return []
    return [p["text"] for p in parts if type(p) is dict and type(p.get("text")) is str]


def _plain_text(obj: dict[str, Any], choices: list[Any]) -> str | None:
    """The text of a chunk that carries only a text delta (the hot path), else None.

    Only ``role`` may accompany ``content``; any other field must be empty (``null``, ``""``).
    """
    if len(choices) != 1 or obj.get("usage") or obj.get("error"):
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or choice.get("index", 0) != 0:
        return None
    content = delta.get("content")
    if type(content) is not str:
        return None
    if len(delta) > 1:
        for key, value in delta.items():
            if value and key != "content" and key != "role":
                return None
    return content
