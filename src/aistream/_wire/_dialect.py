"""The dialect contract shared by every wire protocol, `detect_protocol` for "auto", and the
helpers the dialects share (finish reasons, transient error codes, usage fields, function
tools), so that no dialect imports another.

A dialect is pure: `build_request` turns a ChatRequest into bytes to send, and one dialect
instance per attempt turns decoded frames into StreamEvents. JSON is `_json`'s. Stdlib only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from ._events import Frame, Heartbeat, StreamEvent, UsageReport

#: What a dialect returns for a frame that is only a keep-alive. Compared by identity, so the
#: reader can tell a heartbeat from content without looking inside. Tuples: shared by every
#: parse, so nobody may append to them.
HEARTBEAT_ONLY: tuple[StreamEvent, ...] = (Heartbeat(),)
NOTHING: tuple[StreamEvent, ...] = ()

#: HTTP statuses that are worth retrying: the one list, which `_retry` uses too.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image on a user message: a URL, or raw bytes with their media type."""

    url: str | None = None
    data: bytes | None = None
    media_type: str | None = None

    def base64(self) -> str:
        """The bytes as base64 text ("" for a URL image)."""
        return base64.b64encode(self.data).decode("ascii") if self.data is not None else ""

    def data_url(self) -> str:
        """The URL, or the bytes as a ``data:`` URL."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type or 'application/octet-stream'};base64,{self.base64()}"


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A tool call on an assistant message sent back to the model: `arguments` is JSON text;
    `signature` is the provider's opaque token for it, sent back verbatim (Gemini)."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: `parameters` is the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message as sent on the wire.

    Roles: system, user (may carry `images`), assistant (may carry `tool_calls`), tool (answers
    the call `tool_call_id`; `name` is that call's tool when known; `is_error` when it failed).
    """

    role: str
    content: str
    tool_calls: tuple[ToolCallPart, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False
    images: tuple[ImagePart, ...] = ()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a dialect needs to build a request."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    system_prompt: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # extra body fields (max_tokens, …)
    tools: tuple[ToolSpec, ...] = ()


def tool_names(messages: tuple[ChatMessage, ...]) -> dict[str, str]:
    """The tool name of every call id in the assistant messages (tool results need it where a
    provider links results by name: Ollama, Gemini)."""
    return {c.id: c.name for m in messages for c in m.tool_calls}


def tool_name_of(message: ChatMessage, names: Mapping[str, str]) -> str | None:
    """The tool a tool message answers: its own `name`, else its call's."""
    return message.name or names.get(message.tool_call_id or "")


def parse_arguments(call: ToolCallPart, provider: str) -> dict[str, Any]:
    """A call's arguments as the JSON object a provider wants (Anthropic, Ollama, Gemini).

    Raises:
        ValueError: the arguments are not a JSON object, which `provider` cannot carry.
    """
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(
            f"tool call {call.id!r} ({call.name}) has arguments that are not a JSON object "
            f"({call.arguments[:80]!r}); {provider} takes arguments as an object: fix or drop "
            "that message from the history"
        )
    return value


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request ready to send: the transport adds the caller's headers."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


class Dialect(Protocol):
    """One wire protocol. Instances hold per-attempt parse state; build_request is stateless."""

    name: ClassVar[str]
    framing: ClassVar[Literal["sse", "ndjson"]]
    #: Whether events carry ids that allow resuming with Last-Event-ID.
    resumable: ClassVar[bool]

    @property
    def finished(self) -> bool:
        """True once the stream's terminal marker was seen."""
        ...

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        """Return the request for `request` sent to `endpoint`."""
        ...

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        """Return the events carried by one decoded frame (the shared NOTHING when none)."""
        ...

    def text_of(self, data: bytes) -> str | None:
        """The per-token fast path: the reply text of an SSE event of the default type whose
        data is the UTF-8 `data`, when text is all it carries ("" for an empty delta).

        None means "parse it": the transport then decodes the frame and calls `parse`. A
        text returned here must equal what `parse` would give as one `TextDelta` without an
        index, and leave the same state behind.
        """
        ...


def detect_protocol(
    endpoint: str,
) -> Literal["native", "openai", "anthropic", "ollama", "responses", "gemini"]:
    """Pick the protocol from the endpoint's path, for ``protocol="auto"``.

    ```py
    detect_protocol("https://api.openai.com/v1/chat/completions")  # "openai"
    detect_protocol("https://api.anthropic.com/v1/messages")       # "anthropic"
    detect_protocol("https://api.openai.com/v1/responses")         # "responses"
    detect_protocol("https://generativelanguage.googleapis.com/v1beta/models/"
                    "gemini-2.5-flash:streamGenerateContent")      # "gemini"
    detect_protocol("http://127.0.0.1:8000/api/chat")              # "native"
    ```
    """
    path = urlsplit(endpoint).path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/v1/messages") or path == "/messages":
        return "anthropic"
    if path.endswith("/responses"):
        return "responses"
    if ":streamGenerateContent" in path:
        return "gemini"
    return "native"


def as_int(value: Any) -> int | None:
    """An int from a wire value, or None when absent or not a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 0 else None


def error_message(value: Any) -> tuple[str, str | None]:
    """The (message, code) of an error object in any of the shapes servers send."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping):
        message = value.get("message") or value.get("error") or value.get("detail")
        code = value.get("code") or value.get("type")
        if isinstance(message, Mapping):  # {"error": {"message": ...}}
            return error_message(message)
        return (str(message) if message else json.dumps(value)), (str(code) if code else None)
    return str(value), None


# --- helpers shared by the dialects (no dialect imports another) ------------------------------

#: Error codes our server (and common proxies) use for transient failures.
TRANSIENT_CODES = frozenset(
    {
        "overloaded",
        "overloaded_error",
        "rate_limited",
        "rate_limit",
        "rate_limit_exceeded",
        "timeout",
        "unavailable",
        "upstream_unavailable",
        "upstream_timeout",
        "upstream_error",
        "server_error",
        "internal_error",
        "api_error",
    }
)

_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # OpenAI's legacy name
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "stopped": "stopped",
    "error": "error",
}


def normalize_finish(reason: str) -> str:
    """Map a provider's stop reason onto stop / length / tool_calls / content_filter / error."""
    return _FINISH_REASONS.get(reason, reason)


def is_transient(code: str | None) -> bool:
    """Whether an in-stream error code names a transient failure worth retrying."""
    if not code:
        return False
    code = code.lower()
    return code in TRANSIENT_CODES or (code.isdigit() and int(code) in RETRYABLE_STATUS)


def usage_report(obj: Mapping[str, Any]) -> UsageReport:
    """A UsageReport from camelCase or snake_case usage fields."""
    prompt = obj.get("promptTokens", obj.get("prompt_tokens"))
    completion = obj.get("completionTokens", obj.get("completion_tokens"))
    total = obj.get("totalTokens", obj.get("total_tokens"))
    return UsageReport(as_int(prompt), as_int(completion), as_int(total))


def function_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Tools as chat completions (and Ollama) define them: ``{"type": "function", "function"}``."""
    out = []
    for t in tools:
        function: dict[str, Any] = {"name": t.name}
        if t.description:
            function["description"] = t.description
        function["parameters"] = dict(t.parameters)
        out.append({"type": "function", "function": function})
    return out
