"""The native protocol: this project's server and the seed's (ai-kit) variants. Stdlib only.

Sends: ``messages`` (assistant ``toolCalls``, tool ``toolCallId`` and
``isError``, user ``images`` as ``{"url"}`` or ``{"data": <base64>, "mediaType"}``), ``model``,
``systemPrompt``, ``tools`` (``{"name", "description", "parameters"}``), the options, ``stream``.

Reads: `start`, `token` (``{"token", "index"}``), `usage` (nested ``{"usage": {...}}`` or the
fields at top level), `metadata`, `reasoning`, `tool-call`, `error` (``{"error", "code"}``),
`done` (``{"finishReason"}``), and the seed's unnamed ``data: {"token": ...}`` events ended by
``data: [DONE]``.
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
    StreamStarted,
    TextDelta,
    ToolCallDone,
)
from ._json import json_body, loads_object


class NativeDialect:
    """Parser state for one attempt of a native stream."""

    name: ClassVar[str] = "native"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = True

    __slots__ = ("_finished",)

    def __init__(self) -> None:
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        payload: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
        if request.model:
            payload["model"] = request.model
        if request.system_prompt:
            payload["systemPrompt"] = request.system_prompt
        if request.tools:
            payload["tools"] = [
                {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
                for t in request.tools
            ]
        payload.update(request.options)
        payload["stream"] = True
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def text_of(self, data: bytes) -> str | None:
        return None  # its events carry ids and token indices: always parsed

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("native expects SSE frames", frame.text[:200])]
        data = frame.data
        if data == "[DONE]":
            self._finished = True
            return [Done()]
        obj = loads_object(data)
        if obj is None:
            return [Skipped(f"malformed JSON in native {frame.event!r} event", data[:200])]
        kind = frame.event
        if kind == "token" or kind == "message":
            return self._parse_message(obj, data)
        if kind == "usage":
            nested = obj.get("usage")
            return [usage_report(nested if isinstance(nested, Mapping) else obj)]
        if kind == "done":
            self._finished = True
            reason = obj.get("finishReason")
            return [FinishReason(normalize_finish(reason)), Done()] if reason else [Done()]
        if kind == "start":
            stream_id, model = obj.get("id"), obj.get("model")
            return [
                StreamStarted(
                    str(stream_id) if stream_id is not None else None,
                    str(model) if model else None,
                )
            ]
        if kind == "error":
            return [_server_error(obj)]
        if kind == "metadata":
            reason = obj.get("finishReason")
            if isinstance(reason, str):
                return [Metadata(obj), FinishReason(normalize_finish(reason))]
            return [Metadata(obj)]
        if kind == "reasoning":
            text = obj.get("text", obj.get("reasoning"))
            return [ReasoningDelta(text)] if isinstance(text, str) and text else NOTHING
        if kind == "tool-call":
            return [_tool_call(obj, data)]
        return [Skipped(f"unknown native event type {kind!r}", data[:200])]

    def _parse_message(self, obj: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        token = obj.get("token")
        if isinstance(token, str):
            if not token:
                return NOTHING  # the seed ignores empty tokens
            index = obj.get("index")
            return [TextDelta(token, index if type(index) is int else None)]
        events: list[StreamEvent] = []
        if "error" in obj:
            return [_server_error(obj)]
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            events.append(usage_report(usage))
        if obj.get("done") is True:
            self._finished = True
            events.append(Done())
        return events or [Skipped("native event without token, usage or done", data[:200])]


def _message(m: ChatMessage) -> dict[str, Any]:
    """A message in the native request shape: toolCalls, toolCallId, images."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["toolCalls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments}
            | ({"signature": c.signature} if c.signature is not None else {})
            for c in m.tool_calls
        ]
    if m.role == "tool":
        out["toolCallId"] = m.tool_call_id
        if m.is_error:
            out["isError"] = True
    if m.images:
        out["images"] = [
            {"url": i.url} if i.url is not None else {"data": i.base64(), "mediaType": i.media_type}
            for i in m.images
        ]
    return out


def _server_error(obj: Mapping[str, Any]) -> ServerError:
    message, code = error_message(obj.get("error", obj))
    code = str(obj["code"]) if obj.get("code") is not None else code
    explicit = obj.get("retryable")
    retryable = explicit if isinstance(explicit, bool) else is_transient(code)
    return ServerError(message, code, retryable, dict(obj))


def _tool_call(obj: Mapping[str, Any], data: str) -> StreamEvent:
    call_id, name, arguments = obj.get("id"), obj.get("name"), obj.get("arguments", "{}")
    if not isinstance(name, str):
        return Skipped("native tool-call without a name", data[:200])
    if not isinstance(arguments, str):
        arguments = json_body(arguments).decode() if arguments is not None else "{}"
    signature = obj.get("signature")  # a provider's token for the call (Gemini), sent back
    return ToolCallDone(
        str(call_id or ""), name, arguments, signature if isinstance(signature, str) else None
    )
