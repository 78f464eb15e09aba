"""The OpenAI Responses API on our side: its request body in, its event stream out.

Imports `_wire`, `_encoders`, `_content`, `_options` and the stdlib; no I/O. `parse_responses`
validates a ``POST /v1/responses`` body into a ChatRequest; `ResponsesEncoder` writes the
reply as the Responses stream (named events, each with a ``sequence_number`` from 0), so the
official SDK's ``responses.create(stream=True)`` and ``responses.stream(...)`` read it as they
read OpenAI's; `response_object` is the whole Response for ``"stream": false``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .._wire._dialect import ChatMessage, ChatRequest, ImagePart, ToolCallPart
from .._wire._events import (
    ServerError,
    StreamEvent,
    ToolCallDone,
    UsageReport,
)
from ._content import (
    MAX_ID_CHARS,
    ContentError,
    check_tool_results,
    image_from_url,
    openai_tools,
)
from ._encoders import UsageTotals, _dumps, _Encoding, _Reports, stream_tag
from ._options import InvalidOption, request_options

__all__ = ["ResponsesEncoder", "ResponsesOptions", "parse_responses", "response_object"]

log = logging.getLogger("aistream.server")

#: Finish reasons that end a reply as ``response.incomplete``, with this reason.
_INCOMPLETE: Final = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
    "stopped": "stopped",
    "error": "error",
}
#: Our error codes → the Responses ``error.code`` (transient failures are ``server_error``).
_ERROR_CODES: Final = {"rate_limited": "rate_limit_exceeded"}


class ResponsesEncoder(_Encoding):
    """Turns events into the Responses stream, one SSE event per frame.

    - `start()`: ``response.created`` and ``response.in_progress`` (status ``in_progress``);
    - text: a ``message`` output item (``output_item.added``, ``content_part.added``, then
      ``output_text.delta`` per token); reasoning: a ``reasoning`` item with a summary part
      (``reasoning_summary_text.delta``); an item is closed (``…done`` events with the whole
      text) when another kind of output comes or the reply ends;
    - a tool call: a ``function_call`` item (``call_id`` = the call's id) with the whole
      arguments in one ``function_call_arguments.delta``, then ``.done`` and the item's done;
    - the end: ``response.completed`` (``incomplete`` with ``incomplete_details.reason``
      ``max_output_tokens`` / ``content_filter`` for length / content_filter, and for a
      stopped reply), with every output item and the usage;
    - an error: the documented flat ``error`` event (``code``, ``message``, and ``retryable``,
      our extension) and ``response.failed``.

    Not expressible: `Metadata` (logged once per stream). No resume (the stream is not kept).
    """

    format: ClassVar[str] = "responses"
    resumable: ClassVar[bool] = False
    headers: ClassVar[Mapping[str, str]] = {}

    __slots__ = (
        "_error",
        "_incomplete",
        "_open",
        "_reports",
        "created",
        "output",
        "status",
        "usage",
    )

    def __init__(self, stream_id: str, model: str | None = None, *, created: int | None = None):
        super().__init__(stream_id, model)
        self.created = int(time.time()) if created is None else created
        self.status = "in_progress"
        self.usage = UsageTotals()
        self.output: list[dict[str, Any]] = []  # the output items so far (done ones whole)
        self._open: dict[str, Any] | None = None  # the message or reasoning item being written
        self._error: dict[str, str] | None = None
        self._incomplete: str | None = None
        self._reports = _Reports()

    @property
    def response_id(self) -> str:
        return f"resp_{self.stream_id}"

    def response(self) -> dict[str, Any]:
        """The Response object as it stands (what the lifecycle events carry)."""
        usage = None
        if self.usage.seen:
            prompt, completion = self.usage.prompt or 0, self.usage.completion or 0
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage.total
                if self.usage.total is not None
                else prompt + completion,
            }
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": self.status,
            "background": False,
            "error": self._error,
            "incomplete_details": {"reason": self._incomplete} if self._incomplete else None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model or "",
            "output": list(self.output),
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": False,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": usage if self.status != "in_progress" else None,
            "metadata": {},
        }

    def _event(self, kind: str, fields: Mapping[str, Any]) -> str:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {_dumps(payload)}\n\n"

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        snapshot = {"response": self.response()}
        frames = self._event("response.created", snapshot)
        return (frames + self._event("response.in_progress", snapshot)).encode()

    def token(self, text: str) -> bytes:
        """An ``output_text.delta`` (opening a message item first when needed)."""
        head = self._open_item("message")
        item = self._open
        assert item is not None
        item["content"][0]["text"] += text
        delta = {
            "item_id": item["id"],
            "output_index": len(self.output),
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        }
        return (head + self._event("response.output_text.delta", delta)).encode()

    def _reasoning(self, text: str) -> bytes:
        head = self._open_item("reasoning")
        item = self._open
        assert item is not None
        item["summary"][0]["text"] += text
        delta = {
            "item_id": item["id"],
            "output_index": len(self.output),
            "summary_index": 0,
            "delta": text,
        }
        return (head + self._event("response.reasoning_summary_text.delta", delta)).encode()

    def _open_item(self, kind: str) -> str:
        """The frames that close the open item of another kind and open one of `kind`."""
        if self._open is not None and self._open["type"] == kind:
            return ""
        out = self._close()
        index = len(self.output)
        if kind == "message":
            item_id = f"msg_{self.stream_id}_{index}"
            self._open = {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": ""}],
            }
            added = {**self._open, "content": []}
            out += self._event("response.output_item.added", {"output_index": index, "item": added})
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            out += self._event("response.content_part.added", {**where, "part": part})
        else:
            item_id = f"rs_{self.stream_id}_{index}"
            self._open = {
                "id": item_id,
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": ""}],
            }
            added = {**self._open, "summary": []}
            out += self._event("response.output_item.added", {"output_index": index, "item": added})
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            out += self._event("response.reasoning_summary_part.added", {**where, "part": part})
        return out

    def _close(self) -> str:
        """The ``…done`` frames of the open item, which joins `output`."""
        item, self._open = self._open, None
        if item is None:
            return ""
        index = len(self.output)
        out = ""
        if item["type"] == "message":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._event(
                "response.output_text.done", {**where, "text": part["text"], "logprobs": []}
            )
            out += self._event("response.content_part.done", {**where, "part": part})
            item["status"] = "completed"
        else:
            part = item["summary"][0]
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            out += self._event(
                "response.reasoning_summary_text.done", {**where, "text": part["text"]}
            )
            out += self._event("response.reasoning_summary_part.done", {**where, "part": part})
        out += self._event("response.output_item.done", {"output_index": index, "item": item})
        self.output.append(item)
        return out

    def _tool_call(self, call: ToolCallDone) -> bytes:
        out = self._close()
        index = len(self.output)
        item_id = f"fc_{self.stream_id}_{index}"
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
        }
        out += self._event("response.output_item.added", {"output_index": index, "item": item})
        where = {"item_id": item_id, "output_index": index}
        out += self._event(
            "response.function_call_arguments.delta", {**where, "delta": call.arguments}
        )
        out += self._event(
            "response.function_call_arguments.done",
            {**where, "name": call.name, "arguments": call.arguments},
        )
        done = {**item, "status": "completed", "arguments": call.arguments}
        out += self._event("response.output_item.done", {"output_index": index, "item": done})
        self.output.append(done)
        return out.encode()

    def done(self, finish_reason: str | None = None) -> bytes:
        """The open item's done events, then ``response.completed`` (or ``.incomplete``)."""
        self.finished = True
        out = self._close()
        calls = any(item["type"] == "function_call" for item in self.output)
        reason = finish_reason or self.finish_reason or ("tool_calls" if calls else "stop")
        self._incomplete = _INCOMPLETE.get(reason)
        self.status = "incomplete" if self._incomplete else "completed"
        kind = f"response.{self.status}"
        return (out + self._event(kind, {"response": self.response()})).encode()

    def error(self, message: str, code: str, retryable: bool) -> bytes:
        """The flat ``error`` event, then ``response.failed``; nothing after them."""
        self.finished = True
        out = self._close()
        wire_code = _ERROR_CODES.get(code) or ("server_error" if retryable else code)
        error = {"code": wire_code, "message": message, "param": None, "retryable": retryable}
        out += self._event("error", error)
        self._error = {"code": wire_code, "message": message}
        self.status = "failed"
        return (out + self._event("response.failed", {"response": self.response()})).encode()

    def _usage(self, report: UsageReport) -> None:
        self.usage.add(report)  # held for response.completed

    def _metadata(self, data: dict[str, Any]) -> None:
        self._reports.once(self.stream_id, "responses", "metadata events")


# --- the request ----------------------------------------------------------------------------

#: Body fields the request shape reads (the rest are options, or dropped with a WARNING).
_FIELDS: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "stream",
        "store",
        "metadata",
        "user",
        "include",
        "stream_options",
        "max_output_tokens",
        "text",
    }
)
_ROLES: Final = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}
_EXAMPLE: Final = '{"model": "m", "input": "Hello!", "stream": true}'


class RequestError(ValueError):
    """A body the Responses endpoint refuses: `status`, `code`, `message`, `param`."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class ResponsesOptions:
    """What a Responses body asks of the reply besides the conversation."""

    stream: bool = False


def parse_responses(body: Mapping[str, Any]) -> tuple[ChatRequest, ResponsesOptions]:
    """Validate a decoded ``POST /v1/responses`` body into a ChatRequest.

    ``input`` is a string or a list of items: messages (roles user, assistant, system,
    developer; ``input_text`` / ``output_text`` / ``input_image`` parts), ``function_call``
    and ``function_call_output`` items; ``reasoning`` items are left out (the upstream makes
    its own). ``instructions`` is the system prompt; ``tools`` are function tools;
    ``max_output_tokens``, ``temperature``, ``top_p`` and ``text.format`` are relayed (the
    rest of the known options as for chat completions), other fields dropped with a WARNING.
    What would change the reply silently is refused: ``previous_response_id`` and
    ``conversation`` (this server keeps no responses), ``background``, non-function tools.

    Raises:
        RequestError: the body cannot be served as it is.
    """
    for key in ("previous_response_id", "conversation", "background", "prompt"):
        if body.get(key):
            raise RequestError(
                f'"{key}" is not supported: this server keeps no responses; send the whole '
                "conversation in input",
                key,
                "unsupported_parameter",
            )
    messages = _input(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError('"instructions" must be a string', "instructions")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError('"model" must be a string', "model")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise RequestError('"stream" must be a boolean', "stream")
    try:
        tools = openai_tools(_function_tools(body.get("tools")))
        check_tool_results(messages)
    except ContentError as exc:
        raise RequestError(str(exc), exc.param) from None
    portable = dict(body)
    if "max_output_tokens" in body:
        portable["max_tokens"] = body["max_output_tokens"]
    text = body.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("format"), Mapping):
        portable["response_format"] = _response_format(text["format"])
    try:
        options = request_options(portable, _FIELDS)
    except InvalidOption as exc:
        raise RequestError(str(exc), exc.name) from None
    request = ChatRequest(tuple(messages), model, instructions or None, options, tools)
    return request, ResponsesOptions(bool(stream))


def _response_format(value: Mapping[str, Any]) -> dict[str, Any]:
    """Responses' ``text.format`` as chat's ``response_format`` (the portable name)."""
    if value.get("type") == "json_schema":
        schema = {k: v for k, v in value.items() if k != "type"}
        return {"type": "json_schema", "json_schema": schema}
    return dict(value)


def _function_tools(value: Any) -> Any:
    """Flat Responses function tools as chat's ``{"type": "function", "function": {...}}``."""
    if not isinstance(value, list):
        return value
    out = []
    for item in value:
        if isinstance(item, dict) and item.get("type") == "function" and "function" not in item:
            function = {k: item.get(k) for k in ("name", "description", "parameters")}
            out.append({"type": "function", "function": function})
        else:
            out.append(item)  # refused by openai_tools with a message
    return out


def _input(value: Any) -> list[ChatMessage]:
    if isinstance(value, str):
        return [ChatMessage("user", value)]
    if not isinstance(value, list) or not value:
        raise RequestError(
            f'"input" must be a string or a non-empty list of items, e.g. {_EXAMPLE}', "input"
        )
    messages: list[ChatMessage] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = ToolCallPart(
                _id(item.get("call_id"), f"{where}.call_id"),
                _id(item.get("name"), f"{where}.name"),
                _arguments(item.get("arguments"), f"{where}.arguments"),
            )
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # the calls of one reply together
                messages[-1] = ChatMessage(
                    "assistant", last.content, tool_calls=(*last.tool_calls, call)
                )
            else:
                messages.append(ChatMessage("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(
                    p.get("text", "") for p in output if isinstance(p, dict)
                )  # input_text parts
            if not isinstance(output, str):
                raise RequestError(f"{where}.output must be a string", f"{where}.output")
            call_id = _id(item.get("call_id"), f"{where}.call_id")
            messages.append(ChatMessage("tool", output, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # the upstream reasons afresh; its items cannot be relayed
        else:
            raise RequestError(
                f"{where} is a {str(kind)[:40]!r} item; this server relays messages, "
                "function_call and function_call_output items",
                where,
                "unsupported_item",
            )
    return messages


def _message(item: Mapping[str, Any], where: str) -> ChatMessage:
    role = _ROLES.get(str(item.get("role")))
    if role is None:
        raise RequestError(
            f"{where}.role must be user, assistant, system or developer", f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of parts", where)
    texts: list[str] = []
    images: list[ImagePart] = []
    for j, part in enumerate(content):
        spot = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "input_image" and role == "user":
            try:
                images.append(image_from_url(part.get("image_url"), f"{spot}.image_url"))
            except ContentError as exc:
                raise RequestError(str(exc), exc.param) from None
        else:
            raise RequestError(
                f"{spot} is a {str(kind)[:40]!r} part; this server relays text and, in user "
                "messages, input_image parts",
                spot,
                "unsupported_content",
            )
    return ChatMessage(role, "".join(texts), images=tuple(images))


def _id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise RequestError(f"{where} must be a non-empty string", where)
    return value


def _arguments(value: Any, where: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, str):
        raise RequestError(f"{where} must be the arguments' JSON text", where)
    return value


# --- not streamed ----------------------------------------------------------------------------


async def response_object(
    events: AsyncIterator[StreamEvent], encoder: ResponsesEncoder
) -> tuple[dict[str, Any], ServerError | None]:
    """The whole Response for ``"stream": false``, or the error that ended the reply."""
    failure: ServerError | None = None
    try:
        async for event in events:
            if isinstance(event, ServerError):
                failure = event
                break
            encoder.encode(event)
            if encoder.finished:
                break
        if not encoder.finished and failure is None:
            encoder.done()
    except Exception as exc:
        log.exception("the generation of %s failed", stream_tag(encoder.response_id))
        failure = ServerError(
            f"the server failed while generating the reply ({type(exc).__name__})",
            "internal_error",
        )
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return encoder.response(), failure
