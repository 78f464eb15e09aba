"""The OpenAI Responses API (``POST …/v1/responses`` with ``stream: true``). Stdlib only.

Reads named events, told apart by the JSON ``type`` (the SSE name when it has none):
`response.created` (whether it is a background response, and then its id) →
`StreamStarted`; `response.output_text.delta` and `response.refusal.delta` → text; reasoning
summary and reasoning text deltas → reasoning; a ``function_call`` item's
`response.output_item.done` → one complete tool call (its ``call_id``, name and whole
arguments: the item, not the argument deltas, so a resumed stream still has them);
`response.completed` / `response.incomplete` (usage, finish reason) and `response.failed` /
`error` (both shapes: flat, as documented, and nested under ``error``, as recorded) → the end.

Responses sends no ``[DONE]`` and no finish reason: the stream is complete at one of the three
terminal events, and the reason is derived (``tool_calls`` when the reply made calls, else
``incomplete_details.reason``: ``max_output_tokens`` → length, ``content_filter``, else stop).

Resume: every event carries a ``sequence_number``. For a background
response (``"background": true``, which `response.created` echoes) the dialect's `cursor` is
``<response id>/<sequence number>`` of the last event parsed, and `resume_request` turns it
into ``GET …/responses/<id>?stream=true&starting_after=<n>``; `stop()` cancels it with
`cancel_request`. Without ``background`` there is no cursor and a dropped reply restarts.

Not expressible, hence `Skipped` (logged): unknown event types (built-in tool calls, audio, …);
known events that carry nothing for the reply are read silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ._dialect import (
    NOTHING,
    ChatMessage,
    ChatRequest,
    RequestSpec,
    ToolSpec,
    as_int,
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
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._json import json_body, loads_object

#: In-stream error codes worth retrying (server_error is transient, the rest fail).
TRANSIENT_ERRORS = frozenset({"server_error", "rate_limit_exceeded"})

#: Chat Completions options with no field in the Responses API.
_NO_FIELD = {
    "stop": "stop sequences",
    "seed": "a seed",
    "n": "several choices",
    "frequency_penalty": "a frequency penalty",
    "presence_penalty": "a presence penalty",
    "logit_bias": "logit bias",
    "logprobs": "logprobs (use top_logprobs)",
    "stream_options": "stream_options (usage always arrives)",
}
#: Chat Completions names of options the Responses API spells differently.
_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}

#: Events that carry nothing this dialect needs (their content comes by other events).
_QUIET = frozenset(
    {
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)
_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_INCOMPLETE = {"max_output_tokens": "length", "max_tokens": "length"}


class ResponsesDialect:
    """Parser state for one attempt of a Responses stream.

    Resumable when the response is a background one (see the module docstring); the transport
    asks `cursor` after each frame and `resume_request` before a resume.
    """

    name: ClassVar[str] = "responses"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = True

    __slots__ = ("_background", "_calls", "_finished", "_response_id", "_sequence")

    def __init__(self) -> None:
        self._finished = False
        self._response_id: str | None = None
        self._background = False
        self._sequence: int | None = None  # the sequence_number of the last event parsed
        self._calls = 0  # function calls completed in this attempt

    @property
    def finished(self) -> bool:
        return self._finished

    def cursor(self) -> str | None:
        """Where a resume starts: ``<response id>/<last sequence number>``, or None when the
        stream cannot be resumed (not a background response, or nothing parsed yet)."""
        if not self._background or self._response_id is None or self._sequence is None:
            return None
        return f"{self._response_id}/{self._sequence}"

    def resume_request(self, spec: RequestSpec, cursor: str) -> RequestSpec:
        """``GET <endpoint>/<id>?stream=true&starting_after=<n>`` for `cursor`, and this
        attempt's state primed with it (events up to ``n`` are dropped if sent again)."""
        response_id, _, number = cursor.rpartition("/")
        self._response_id, self._background = response_id, True
        self._sequence = int(number)
        scheme, netloc, path, query, _ = urlsplit(spec.url)
        kept = [(k, v) for k, v in parse_qsl(query) if k not in ("stream", "starting_after")]
        query = urlencode([*kept, ("stream", "true"), ("starting_after", str(self._sequence))])
        url = urlunsplit((scheme, netloc, f"{path.rstrip('/')}/{quote(response_id)}", query, ""))
        return RequestSpec("GET", url, {"Accept": "text/event-stream"}, b"")

    @staticmethod
    def cancel_request(endpoint: str, stream_id: str) -> RequestSpec:
        """``POST <endpoint>/<id>/cancel``: stops a background response (`stop()` sends it;
        without it the response would run on, and be billed, after the client left)."""
        scheme, netloc, path, query, _ = urlsplit(endpoint)  # the query (Azure's api-version) stays
        path = f"{path.rstrip('/')}/{quote(stream_id, safe='')}/cancel"
        url = urlunsplit((scheme, netloc, path, query, ""))
        return RequestSpec("POST", url, {"Content-Type": "application/json"}, b"{}")

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        """``model``, ``instructions`` (the system prompt), ``input`` (the history as items),
        ``tools``, the options under their Responses names, ``stream: true``.

        Items: a message per text (user images as ``input_image`` parts), an assistant's tool
        calls as ``function_call`` items after its text, tool messages as
        ``function_call_output`` items (Responses has no error flag: the content says it).
        Tools are flat ``{"type": "function", "name", "parameters", "strict": false}``
        (``strict`` defaults to true in this API, which refuses most generated schemas).

        Raises:
            ValueError: an option the Responses API has no field for (``stop``, ``seed``, …).
        """
        items: list[dict[str, Any]] = []
        for m in request.messages:
            items.extend(_items(m))
        payload: dict[str, Any] = {}
        if request.model:
            payload["model"] = request.model
        if request.system_prompt:
            payload["instructions"] = request.system_prompt
        payload["input"] = items
        if request.tools:
            payload["tools"] = [_tool(t) for t in request.tools]
        payload.update(_options(request.options))
        payload["stream"] = True
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def text_of(self, data: bytes) -> str | None:
        return None  # every event carries a sequence number to record: always parsed

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("responses expects SSE frames", frame.text[:200])]
        data = frame.data
        obj = loads_object(data)
        if obj is None:
            return [Skipped(f"malformed JSON in responses {frame.event!r} event", data[:200])]
        kind = obj.get("type")
        if not isinstance(kind, str):
            kind = frame.event
        sequence = as_int(obj.get("sequence_number"))
        if sequence is not None:
            if self._sequence is not None and sequence <= self._sequence:
                return NOTHING  # sent again after a resume: already delivered
            self._sequence = sequence
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            delta = obj.get("delta")
            return [TextDelta(delta)] if type(delta) is str and delta else NOTHING
        if kind in _REASONING:
            delta = obj.get("delta")
            return [ReasoningDelta(delta)] if type(delta) is str and delta else NOTHING
        if kind == "response.output_item.done":
            return self._item_done(obj.get("item"), data)
        if kind in _QUIET:
            return NOTHING
        if kind == "response.created":
            return self._created(obj.get("response"))
        if kind in ("response.completed", "response.incomplete"):
            return self._end(obj.get("response"))
        if kind == "response.failed":
            return [self._failed(obj)]
        if kind == "error":
            return [_error_event(obj)]
        return [Skipped(f"unknown responses event type {kind!r}", data[:200])]

    def _created(self, response: Any) -> Sequence[StreamEvent]:
        if not isinstance(response, Mapping):
            return NOTHING
        response_id = response.get("id")
        if isinstance(response_id, str) and response_id:
            self._response_id = response_id
        self._background = response.get("background") is True
        model = response.get("model")
        # Only a background response can be resumed or cancelled: only its id is announced.
        stream_id = self._response_id if self._background else None
        return [StreamStarted(stream_id, model if isinstance(model, str) else None)]

    def _item_done(self, item: Any, data: str) -> Sequence[StreamEvent]:
        if not isinstance(item, Mapping) or item.get("type") != "function_call":
            return NOTHING  # messages and reasoning came as deltas
        name, arguments = item.get("name"), item.get("arguments")
        call_id = item.get("call_id") or item.get("id")
        if not isinstance(name, str) or not name:
            return [Skipped("responses function_call item without a name", data[:200])]
        self._calls += 1
        arguments = arguments if isinstance(arguments, str) and arguments else "{}"
        return [ToolCallDone(str(call_id or f"call_{self._calls}"), name, arguments)]

    def _end(self, response: Any) -> Sequence[StreamEvent]:
        self._finished = True
        events: list[StreamEvent] = []
        if isinstance(response, Mapping):
            usage = response.get("usage")
            if isinstance(usage, Mapping):
                events.append(usage_report(usage))
        events.append(FinishReason(self._finish(response)))
        events.append(Done())
        return events

    def _finish(self, response: Any) -> str:
        """tool_calls when the reply made calls (in this attempt or, after a resume, in the
        response's output); else the incomplete reason; else stop."""
        output = response.get("output") if isinstance(response, Mapping) else None
        if self._calls or (
            isinstance(output, list)
            and any(isinstance(i, Mapping) and i.get("type") == "function_call" for i in output)
        ):
            return "tool_calls"
        details = response.get("incomplete_details") if isinstance(response, Mapping) else None
        reason = details.get("reason") if isinstance(details, Mapping) else None
        if isinstance(reason, str) and reason:
            return _INCOMPLETE.get(reason, reason)
        return "stop"

    def _failed(self, obj: Mapping[str, Any]) -> ServerError:
        self._finished = True
        response = obj.get("response")
        error = response.get("error") if isinstance(response, Mapping) else None
        if not isinstance(error, Mapping):
            return ServerError("the response failed without an error object", None, False, obj)
        return _server_error(error, dict(obj))


def _items(m: ChatMessage) -> list[dict[str, Any]]:
    """One history message as Responses input items."""
    if m.role == "tool":
        return [{"type": "function_call_output", "call_id": m.tool_call_id, "output": m.content}]
    items: list[dict[str, Any]] = []
    if m.images:
        parts: list[dict[str, Any]] = (
            [{"type": "input_text", "text": m.content}] if m.content else []
        )
        parts += [
            {"type": "input_image", "image_url": i.data_url(), "detail": "auto"} for i in m.images
        ]
        items.append({"role": m.role, "content": parts})
    elif m.content:
        items.append({"role": m.role, "content": m.content})
    items += [
        {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
        for c in m.tool_calls
    ]
    return items


def _tool(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parameters"] = dict(tool.parameters) or {"type": "object", "properties": {}}
    out["strict"] = False
    return out


def usage_report(usage: Mapping[str, Any]) -> UsageReport:
    """Responses usage: ``input_tokens`` includes cached ones, ``output_tokens`` reasoning."""
    return UsageReport(
        as_int(usage.get("input_tokens")),
        as_int(usage.get("output_tokens")),
        as_int(usage.get("total_tokens")),
    )


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options under their Responses names; ValueError for those it has no field for."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in _NO_FIELD:
            raise ValueError(
                f"the Responses API has no field for {_NO_FIELD[key]} (option {key!r}); "
                "leave it out, or use protocol='openai' (Chat Completions) for it"
            )
        if key == "response_format":
            out["text"] = {"format": _text_format(value)}
        else:
            out[_RENAMED.get(key, key)] = value
    return out


def _text_format(value: Any) -> Any:
    """Chat's ``response_format`` as Responses' ``text.format`` (flat ``json_schema``)."""
    if isinstance(value, Mapping) and value.get("type") == "json_schema":
        schema = value.get("json_schema")
        if isinstance(schema, Mapping):
            return {"type": "json_schema", **schema}
    return value


def _error_event(obj: Mapping[str, Any]) -> ServerError:
    """An ``error`` event, flat (documented) or nested under ``error`` (recorded)."""
    nested = obj.get("error")
    return _server_error(nested if isinstance(nested, Mapping) else obj, dict(obj))


def _server_error(error: Mapping[str, Any], body: dict[str, Any]) -> ServerError:
    code = error.get("code") or error.get("type")
    code = str(code) if code else None
    message = error.get("message")
    text = str(message) if message else f"responses error {code or 'without a message'}"
    return ServerError(text, code, code in TRANSIENT_ERRORS, body)
