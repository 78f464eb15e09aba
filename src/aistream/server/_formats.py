"""Requests in, output format chosen: the request bodies the app reads and the format rules.

Imports starlette (for the request and the JSON responses), `_wire` and `_encoders`.

Three request shapes become one `ChatRequest`:

- native: ``{"messages": [{"role", "content"}], "model", "systemPrompt"}``;
- the Vercel AI SDK's ``useChat`` body: the same ``messages`` but as UI messages, whose text is
  in ``parts`` (``[{"type": "text", "text": ...}]``), plus ``id`` / ``trigger`` / ``messageId``;
- OpenAI's chat completions body (``POST /v1/chat/completions``): ``messages`` with ``system`` /
  ``developer`` / ``user`` / ``assistant`` roles, ``content`` a string or text parts, ``model``,
  ``stream``, ``stream_options.include_usage``, and the portable sampling options.

The output format of a reply (`choose_format`), first rule that applies:

1. the query parameter ``?format=native|openai|vercel``;
2. a request header ``x-vercel-ai-ui-message-stream`` (any value) → vercel;
3. an ``Accept`` media range with a ``format`` parameter, e.g.
   ``Accept: text/event-stream; format=openai``;
4. for ``POST /api/chat``: a body in the UI message shape (a message with a ``parts`` list and
   no string ``content``, which is what ``useChat`` sends) → vercel;
5. the endpoint's own: native for ``/api/chat``, openai for ``/v1/chat/completions``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse

from .._wire._dialect import ChatMessage, ChatRequest, ImagePart, ToolCallPart
from ._content import (
    MAX_IMAGES,
    ContentError,
    check_tool_results,
    image_from_url,
    native_images,
    native_tool_calls,
    native_tools,
    openai_tool_calls,
    openai_tools,
)
from ._encoders import FORMATS, Format
from ._options import InvalidOption, request_options
from ._ui import UnsupportedPart, ui_messages

__all__ = [
    "BadRequest",
    "OpenAIOptions",
    "choose_format",
    "decode_body",
    "is_ui_body",
    "parse_chat_request",
    "parse_native",
    "parse_openai",
    "requested_format",
]

log = logging.getLogger("aistream.server")

_ROLES: Final = ("system", "user", "assistant")
_NATIVE_ROLES: Final = ("system", "user", "assistant", "tool")
_EXAMPLE: Final = '{"messages": [{"role": "user", "content": "Hello"}]}'
_OPENAI_EXAMPLE: Final = '{"model": "m", "messages": [{"role": "user", "content": "Hello"}]}'
#: Fields of a native (or useChat) body that are not sampling options.
_NATIVE_FIELDS: Final = frozenset(
    {
        "messages",
        "model",
        "systemPrompt",
        "stream",
        "stream_options",
        "id",
        "trigger",
        "messageId",
        "tools",
    }
)
#: Fields of an OpenAI body that are not sampling options (refused ones included).
_OPENAI_FIELDS: Final = frozenset(
    {"messages", "model", "stream", "stream_options", "n", "tools", "functions"}
)


class BadRequest(Exception):
    """A request the app refuses, with the JSON error it answers."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def response(self) -> JSONResponse:
        """The native error body: ``{"error": message, "code": code, "retryable": false}``."""
        body = {"error": self.message, "code": self.code, "retryable": False}
        return JSONResponse(body, status_code=self.status)

    def openai_response(self) -> JSONResponse:
        """OpenAI's error body; validation errors are 400, as OpenAI answers them."""
        status = 400 if self.status == 422 else self.status
        error = {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
            "retryable": False,
        }
        return JSONResponse({"error": error}, status_code=status)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- format selection ------------------------------------------------------------------------


def requested_format(query: QueryParams, headers: Headers) -> Format | None:
    """The format the request asks for by query or header (rules 1–3), or None.

    Raises:
        BadRequest: ``?format=`` (or an Accept ``format`` parameter) names no known format.
    """
    value = query.get("format")
    if value is not None:
        return _known(value.strip().lower(), "the format query parameter")
    if "x-vercel-ai-ui-message-stream" in headers:
        return "vercel"
    accept = headers.get("accept")
    if accept and "format" in accept:
        for media_range in accept.split(","):
            for param in media_range.split(";")[1:]:
                name, _, raw = param.partition("=")
                if name.strip().lower() == "format":
                    return _known(raw.strip().strip('"').lower(), "the Accept format parameter")
    return None


def _known(value: str, where: str) -> Format:
    for name in FORMATS:
        if value == name:
            return name
    raise BadRequest(
        400,
        "invalid_format",
        f"{where} is {value[:50]!r}; use one of: {', '.join(FORMATS)} (native is the default)",
        "format",
    )


def is_ui_body(body: Mapping[str, Any]) -> bool:
    """Whether a body is in the Vercel AI SDK's UI message shape (what ``useChat`` sends)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    return any(
        isinstance(m, dict) and isinstance(m.get("parts"), list) and "content" not in m
        for m in messages
    )


def choose_format(
    query: QueryParams, headers: Headers, body: Mapping[str, Any], default: Format
) -> Format:
    """The output format of a reply: the module's rules 1–5 in order."""
    asked = requested_format(query, headers)
    if asked is not None:
        return asked
    if default == "native" and is_ui_body(body):
        return "vercel"
    return default


# --- bodies ----------------------------------------------------------------------------------


def decode_body(raw: bytes, example: str = _EXAMPLE) -> dict[str, Any]:
    """The JSON object of a request body.

    Raises:
        BadRequest: 400 for a body that is not JSON, 422 for JSON that is not an object.
    """
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(
            400, "invalid_json", f"the body is not valid UTF-8 JSON ({exc}); send e.g. {example}"
        ) from None
    except RecursionError:
        raise BadRequest(
            400, "invalid_json", f"the body's JSON is nested too deeply; send e.g. {example}"
        ) from None
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest(
            422,
            "invalid_request",
            "the body's content holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is "
            "not text; send valid Unicode",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest(
            422,
            "invalid_request",
            f"the body must be a JSON object such as {example}; got {_type_name(body)}",
        )
    return body


def _messages(body: Mapping[str, Any], example: str) -> list[Any]:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            422, "invalid_request", f'"messages" is missing; send e.g. {example}', "messages"
        )
    if not isinstance(messages, list):
        raise BadRequest(
            422,
            "invalid_request",
            '"messages" must be a list of {"role", "content"} objects; '
            f"got {_type_name(messages)}",
            "messages",
        )
    if not messages:
        raise BadRequest(
            422,
            "invalid_request",
            '"messages" is empty; send at least one user message',
            "messages",
        )
    return messages


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a native request body into a ChatRequest.

    Extra message fields (ids, timestamps) are accepted and ignored; the known sampling options
    (``temperature``, ``max_tokens``, ``stop``, …) are kept, other body fields dropped with a
    WARNING (see `_options.request_options`). A message may carry its text as UI message
    ``parts`` instead of ``content`` (see `parse_native`).

    Raises:
        BadRequest: 400 for a body that is not JSON, 422 for a JSON body of the wrong shape.
    """
    return parse_native(decode_body(raw))


def parse_native(body: Mapping[str, Any]) -> ChatRequest:
    """A ChatRequest from a native (or ``useChat``) body already decoded.

    Tools: ``tools``, assistant ``toolCalls``, ``role: "tool"`` messages with
    ``toolCallId`` (each must answer a call of the assistant message before it) and user
    ``images``, checked and bounded by `_content`.

    UI messages (``parts`` instead of ``content``, what ``useChat`` sends) become model
    messages in `_ui.ui_messages`: text, answered tool calls with their results, user images.

    Raises:
        BadRequest: 422 for a body of the wrong shape.
    """
    parsed: list[ChatMessage] = []
    for i, message in enumerate(_messages(body, _EXAMPLE)):
        if not isinstance(message, dict):
            raise BadRequest(
                422,
                "invalid_request",
                f"messages[{i}] must be an object with role and content; got {_type_name(message)}",
            )
        role, content = message.get("role"), message.get("content")
        if role not in _NATIVE_ROLES:
            shown = "missing" if role is None else repr(role)
            raise BadRequest(
                422,
                "invalid_request",
                f"messages[{i}].role is {shown}; use one of: {', '.join(_NATIVE_ROLES)}",
            )
        parts = message.get("parts")
        try:
            if content is None and isinstance(parts, list) and role != "tool":
                parsed.extend(ui_messages(i, role, parts))
                continue
            if not isinstance(content, str):
                raise BadRequest(
                    422,
                    "invalid_request",
                    f"messages[{i}].content must be a string; got {_type_name(content)}",
                )
            parsed.append(_native_message(i, role, content, message))
        except ContentError as exc:
            code = "unsupported_content" if isinstance(exc, UnsupportedPart) else "invalid_request"
            raise BadRequest(422, code, str(exc), exc.param) from None
    try:
        tools = native_tools(body.get("tools"))
        check_tool_results(parsed)
    except ContentError as exc:
        raise BadRequest(422, "invalid_request", str(exc), exc.param) from None
    for key in ("model", "systemPrompt"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(
                422, "invalid_request", f'"{key}" must be a string; got {_type_name(value)}'
            )
    if body.get("stream", True) is not True:
        raise BadRequest(
            422,
            "invalid_request",
            'this endpoint only streams: send "stream": true or leave it out',
        )
    try:
        options = request_options(body, _NATIVE_FIELDS)
    except InvalidOption as exc:
        raise BadRequest(422, "invalid_request", str(exc), exc.name) from None
    system = body.get("systemPrompt") or None
    return ChatRequest(tuple(parsed), body.get("model"), system, options, tools)


def _native_message(i: int, role: str, content: str, message: Mapping[str, Any]) -> ChatMessage:
    """One native message with its tool calls, tool result fields or images."""
    where = f"messages[{i}]"
    for key, owner in (("toolCalls", "assistant"), ("images", "user"), ("toolCallId", "tool")):
        if message.get(key) is not None and role != owner:
            raise ContentError(f"{where}.{key} belongs to {owner} messages, not {role}", where)
    if role == "tool":
        call_id = message.get("toolCallId")
        if not isinstance(call_id, str) or not call_id:
            raise ContentError(
                f"{where} is a tool message without toolCallId: the id of the call it answers",
                where,
            )
        return ChatMessage(
            "tool", content, tool_call_id=call_id, is_error=message.get("isError") is True
        )
    calls = native_tool_calls(message.get("toolCalls"), f"{where}.toolCalls")
    images = native_images(message.get("images"), f"{where}.images")
    if not calls and not images:
        return ChatMessage(role, content)
    return ChatMessage(role, content, tool_calls=calls, images=images)


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """What an OpenAI body asks of the reply besides the conversation."""

    stream: bool = False
    include_usage: bool = False


def parse_openai(raw: bytes) -> tuple[ChatRequest, OpenAIOptions]:
    """Validate an OpenAI chat completions body into a ChatRequest and its reply options.

    System and developer messages stay in the conversation as ``system`` messages (each
    upstream dialect places them as its API wants). The known sampling options (``temperature``,
    ``top_p``, ``max_tokens`` or ``max_completion_tokens``, ``stop``, ``seed``,
    ``response_format``, …) are relayed; other parameters are dropped with a WARNING, except
    those whose loss would change the reply silently, which are refused (400): ``n`` > 1,
    legacy ``functions`` and role ``function``, tool types other than ``function``, and content
    parts other than text and user ``image_url``. Function ``tools``, assistant
    ``tool_calls`` and ``role: "tool"`` results are relayed (checked by `_content`).

    Raises:
        BadRequest: 400 (or 422, answered as 400 by `BadRequest.openai_response`).
    """
    body = decode_body(raw, _OPENAI_EXAMPLE)
    parsed: list[ChatMessage] = []
    for i, message in enumerate(_messages(body, _OPENAI_EXAMPLE)):
        if not isinstance(message, dict):
            raise BadRequest(
                400,
                "invalid_request",
                f"messages[{i}] must be an object with role and content; got {_type_name(message)}",
                f"messages[{i}]",
            )
        role = message.get("role")
        if role == "function":
            raise BadRequest(
                400,
                "unsupported_message",
                f'messages[{i}] uses the legacy role "function"; send tool results as '
                '{"role": "tool", "tool_call_id", "content"}',
                f"messages[{i}]",
            )
        if role == "developer":
            role = "system"
        if role not in _NATIVE_ROLES:
            shown = "missing" if role is None else repr(role)
            raise BadRequest(
                400,
                "invalid_request",
                f"messages[{i}].role is {shown}; use one of: system, developer, user, "
                "assistant, tool",
                f"messages[{i}].role",
            )
        try:
            parsed.append(_openai_message(i, role, message))
        except ContentError as exc:
            raise BadRequest(400, "invalid_request", str(exc), exc.param) from None
    try:
        tools = openai_tools(body.get("tools"))
        check_tool_results(parsed)
    except ContentError as exc:
        raise BadRequest(400, "invalid_request", str(exc), exc.param) from None
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(
            400, "invalid_request", f'"model" must be a string; got {_type_name(model)}', "model"
        )
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest(400, "unsupported_parameter", f'"n" must be 1 (got {n!r})', "n")
    if body.get("functions"):
        raise BadRequest(
            400,
            "unsupported_parameter",
            '"functions" (the legacy form) is not supported: send "tools" '
            '([{"type": "function", "function": {...}}])',
            "functions",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest(
            400, "invalid_request", f'"stream" must be a boolean; got {_type_name(stream)}'
        )
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    try:
        options = request_options(body, _OPENAI_FIELDS)
    except InvalidOption as exc:
        raise BadRequest(400, "invalid_request", str(exc), exc.name) from None
    request = ChatRequest(tuple(parsed), model, None, options, tools)
    return request, OpenAIOptions(bool(stream), include_usage)


def _openai_message(i: int, role: str, message: Mapping[str, Any]) -> ChatMessage:
    """One chat completions message: tool calls, a tool result, or text and image parts."""
    where = f"messages[{i}]"
    content, images = _openai_content(i, message.get("content"), role)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ContentError(
                f"{where} is a tool message without tool_call_id: the id of the call it answers",
                f"{where}.tool_call_id",
            )
        return ChatMessage("tool", content, tool_call_id=call_id)
    calls: tuple[ToolCallPart, ...] = ()
    if message.get("tool_calls") is not None:
        if role != "assistant":
            raise ContentError(f"{where}.tool_calls belong to assistant messages", where)
        calls = openai_tool_calls(message["tool_calls"], f"{where}.tool_calls")
    if not calls and not images:
        return ChatMessage(role, content)
    return ChatMessage(role, content, tool_calls=calls, images=images)


def _openai_content(i: int, content: Any, role: str) -> tuple[str, tuple[ImagePart, ...]]:
    """The text of a message's content (a string or parts) and its images (user only)."""
    if isinstance(content, str):
        return content, ()
    if content is None and role in ("assistant", "tool"):
        return "", ()
    if isinstance(content, list):
        texts: list[str] = []
        images: list[ImagePart] = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
            if kind in ("text", "refusal") and isinstance(text, str):
                texts.append(text)
            elif kind == "image_url" and role == "user" and len(images) < MAX_IMAGES:
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                where = f"messages[{i}].content[{j}].image_url"
                images.append(image_from_url(url, where))
            else:
                raise BadRequest(
                    400,
                    "unsupported_content",
                    f"messages[{i}].content[{j}] is a {kind or _type_name(part)!s} part; this "
                    "server relays text parts, and image_url parts of user messages (at most "
                    f"{MAX_IMAGES})",
                    f"messages[{i}].content",
                )
        return "".join(texts), tuple(images)
    raise BadRequest(
        400,
        "invalid_request",
        f"messages[{i}].content must be a string or a list of text parts; "
        f"got {_type_name(content)}",
        f"messages[{i}].content",
    )
