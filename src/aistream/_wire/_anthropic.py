"""Anthropic Messages streaming (``POST …/v1/messages`` with ``stream: true``). Stdlib only.

Reads `message_start` (input and output tokens), `content_block_start` / `_delta` / `_stop`
(``text_delta`` → text, ``thinking_delta`` → reasoning, ``input_json_delta`` fragments of a
``tool_use`` block → one complete tool call at its stop), `message_delta` (stop reason and the
*cumulative* usage: assigned, never added), `ping` (a heartbeat), `message_stop` (the end) and
`error`. Events are told apart by the JSON ``type`` (the SSE event name when it has none), so a
proxy that drops the ``event:`` lines still works.

Usage: ``prompt_tokens`` is ``input_tokens + cache_creation_input_tokens +
cache_read_input_tokens``, because Anthropic's ``input_tokens`` counts only the uncached part;
the sum is what the model read, like OpenAI's ``prompt_tokens`` (which includes cached tokens).

Not expressible as stream events, hence reported as `Skipped` (logged, never silently dropped):
content blocks other than text / thinking / tool_use (``server_tool_use``, ``redacted_thinking``,
web search results, …; reported once at their start, their deltas then ignored), unknown delta
types such as ``citations_delta``, unknown event types. ``signature_delta`` (the integrity tag of a
thinking block) is not content and is ignored without a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from ._dialect import (
    HEARTBEAT_ONLY,
    NOTHING,
    ChatRequest,
    ImagePart,
    RequestSpec,
    ToolSpec,
    as_int,
    parse_arguments,
)
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
    UsageReport,
)
from ._json import json_body, loads_object

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

#: Error types worth retrying: Anthropic's 429, 500, 504 and 529 classes.
TRANSIENT_ERRORS = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error", "service_unavailable"}
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_PROMPT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_KNOWN_BLOCKS = frozenset({"text", "thinking", "tool_use"})


class _Block:
    """An open content block: its type and, for tool_use, the call being assembled."""

    __slots__ = ("id", "initial", "kind", "name", "parts")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id = ""
        self.name = ""
        self.initial = "{}"  # the JSON of a non-empty `input` given in content_block_start
        self.parts: list[str] = []  # input_json_delta fragments


#: The image types the Messages API takes.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _image_block(image: ImagePart) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    if image.media_type not in IMAGE_TYPES:
        raise ValueError(
            f"Anthropic takes {', '.join(sorted(IMAGE_TYPES))} images; got {image.media_type!r}: "
            "convert the image first"
        )
    source = {"type": "base64", "media_type": image.media_type, "data": image.base64()}
    return {"type": "image", "source": source}


def _tool(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = dict(tool.parameters) or {"type": "object"}
    return out


class AnthropicDialect:
    """Parser state for one attempt of an Anthropic Messages stream.

    Not resumable: events carry no ids, so a dropped reply restarts from the beginning.
    """

    name: ClassVar[str] = "anthropic"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = False

    __slots__ = ("_blocks", "_finished", "_prompt")

    def __init__(self) -> None:
        self._finished = False
        self._blocks: dict[int, _Block] = {}  # open content blocks by index
        self._prompt: dict[str, int] = {}  # the _PROMPT_FIELDS seen so far

    @property
    def finished(self) -> bool:
        return self._finished

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        """The Messages request: system prompt as the ``system`` parameter, never a message.

        Messages with role ``system`` are folded into ``system`` (after `system_prompt`), and
        empty messages are left out (the API rejects empty content). ``max_tokens`` is required
        by the API: 4096 unless ``options["max_tokens"]`` says otherwise. Tools are
        ``{"name", "description", "input_schema"}``; an assistant's tool calls are ``tool_use``
        blocks after its text; tool messages are ``tool_result`` blocks (``is_error`` kept),
        consecutive ones in one user message, as the API requires; images are ``image`` blocks
        (a ``base64`` or ``url`` source) before the text.

        Raises:
            ValueError: an image type Anthropic does not take, or tool call arguments that
                are not a JSON object.
        """
        system = [request.system_prompt] if request.system_prompt else []
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            if m.role == "system":
                if m.content:
                    system.append(m.content)
            elif m.role == "tool":
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
                if m.content:
                    result["content"] = m.content
                if m.is_error:
                    result["is_error"] = True
                last = messages[-1] if messages else None
                if last is not None and last.get("results"):  # the results of one step: together
                    last["content"].append(result)
                else:
                    messages.append({"role": "user", "content": [result], "results": True})
            elif m.tool_calls or m.images:
                blocks = [_image_block(i) for i in m.images]
                if m.content:
                    blocks.append({"type": "text", "text": m.content})
                blocks += [
                    {
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": parse_arguments(c, "Anthropic"),
                    }
                    for c in m.tool_calls
                ]
                messages.append({"role": m.role, "content": blocks})
            elif m.content:
                messages.append({"role": m.role, "content": m.content})
        for message in messages:
            message.pop("results", None)
        payload: dict[str, Any] = {}
        if request.model:
            payload["model"] = request.model
        payload["max_tokens"] = DEFAULT_MAX_TOKENS
        payload["messages"] = messages
        if system:
            payload["system"] = "\n\n".join(system)
        if request.tools:
            payload["tools"] = [_tool(t) for t in request.tools]
        payload.update(request.options)
        payload["stream"] = True
        headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream",
        }
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def text_of(self, data: bytes) -> str | None:
        return None  # its events are named (``event:``): always parsed

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("anthropic expects SSE frames", frame.text[:200])]
        data = frame.data
        if frame.event == "ping":
            return HEARTBEAT_ONLY
        obj = loads_object(data)
        if obj is None:
            if frame.event == "error":  # as the SDK does: the raw text is the message
                return [ServerError(data[:500] or "error event without a body", None, False, data)]
            return [Skipped(f"malformed JSON in anthropic {frame.event!r} event", data[:200])]
        kind = obj.get("type")
        if not isinstance(kind, str):
            kind = frame.event
        if kind == "content_block_delta":
            return self._delta(obj, data)
        if kind == "content_block_start":
            return self._block_start(obj, data)
        if kind == "content_block_stop":
            return self._block_stop(obj, data)
        if kind == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, Mapping) else None
            return [self._usage(usage)] if isinstance(usage, Mapping) else NOTHING
        if kind == "message_delta":
            return self._message_delta(obj)
        if kind == "ping":
            return HEARTBEAT_ONLY
        if kind == "message_stop":
            self._finished = True
            return [Done()]
        if kind == "error":
            return [_server_error(obj)]
        return [Skipped(f"unknown anthropic event type {kind!r}", data[:200])]

    def _delta(self, obj: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        delta = obj.get("delta")
        if type(delta) is not dict:
            return [Skipped("anthropic content_block_delta without a delta", data[:200])]
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [TextDelta(text)] if type(text) is str and text else NOTHING
        if kind == "thinking_delta":
            text = delta.get("thinking")
            return [ReasoningDelta(text)] if type(text) is str and text else NOTHING
        if kind == "signature_delta":
            return NOTHING  # the thinking block's integrity tag: not content
        block = self._blocks.get(_index(obj))
        if kind == "input_json_delta":
            if block is None:
                return [Skipped("anthropic input_json_delta for an unknown block", data[:200])]
            fragment = delta.get("partial_json")
            if block.kind == "tool_use" and type(fragment) is str:
                block.parts.append(fragment)
            return NOTHING  # other blocks that take JSON were reported at their start
        if block is not None and block.kind not in _KNOWN_BLOCKS:
            return NOTHING  # a block already reported as unsupported at its start
        return [Skipped(f"unknown anthropic delta type {kind!r}", data[:200])]

    def _block_start(self, obj: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        block = obj.get("content_block")
        if not isinstance(block, Mapping):
            return [Skipped("anthropic content_block_start without a block", data[:200])]
        kind = str(block.get("type"))
        index = _index(obj)
        state = self._blocks[index] = _Block(kind)
        if kind == "tool_use":
            state.id = str(block.get("id") or f"toolu_{index}")
            name = block.get("name")
            state.name = name if isinstance(name, str) else ""
            initial = block.get("input")
            if isinstance(initial, Mapping) and initial:  # input given whole, not streamed
                state.initial = json_body(initial).decode()
            return NOTHING
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else NOTHING
        if kind == "thinking":
            text = block.get("thinking")
            return [ReasoningDelta(text)] if isinstance(text, str) and text else NOTHING
        return [Skipped(f"anthropic content block type {kind!r} is not supported", data[:200])]

    def _block_stop(self, obj: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        block = self._blocks.pop(_index(obj), None)
        if block is None or block.kind != "tool_use":
            return NOTHING
        arguments = "".join(block.parts) or block.initial
        if not block.name:
            return [Skipped("anthropic tool_use block without a name", data[:200])]
        return [ToolCallDone(block.id, block.name, arguments)]

    def _message_delta(self, obj: dict[str, Any]) -> Sequence[StreamEvent]:
        events: list[StreamEvent] = []
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            events.append(self._usage(usage))
        delta = obj.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, Mapping) else None
        if isinstance(reason, str) and reason:
            events.append(FinishReason(_FINISH.get(reason, reason)))
        return events

    def _usage(self, usage: Mapping[str, Any]) -> UsageReport:
        """A snapshot: every count here is cumulative, so it replaces what came before.

        ``prompt_tokens`` is None (kept) when this event carries none of the input counts.
        """
        prompt = self._prompt
        seen = False
        for key in _PROMPT_FIELDS:
            value = as_int(usage.get(key))
            if value is not None:
                prompt[key] = value
                seen = True
        return UsageReport(
            sum(prompt.values()) if seen else None, as_int(usage.get("output_tokens"))
        )


def _index(obj: Mapping[str, Any]) -> int:
    index = obj.get("index")
    return index if type(index) is int else -1


def _server_error(obj: Mapping[str, Any]) -> ServerError:
    error = obj.get("error")
    if isinstance(error, Mapping):
        message, code = error.get("message"), error.get("type")
    else:
        message, code = error, None
    code = str(code) if code else None
    text = str(message) if message else f"anthropic error {code or 'without a message'}"
    return ServerError(text, code, code in TRANSIENT_ERRORS, dict(obj))
