"""Tools, tool calls, tool results and images in a request body: read, checked and bounded.

Imports `_wire` and the stdlib only (the request parsers in `_formats` call it). A request body
is untrusted: every tool definition, call and image is checked for shape and size here before
anything is relayed, and each refusal says what to send instead.

Native shapes: ``tools: [{"name", "description", "parameters"}]``; assistant
``toolCalls: [{"id", "name", "arguments"}]``; ``{"role": "tool", "toolCallId", "content",
"isError"?}``; user ``images: [{"url"} | {"data": <base64>, "mediaType"}]``. OpenAI shapes:
``tools: [{"type": "function", "function": {...}}]``, assistant ``tool_calls``, ``role: "tool"``
with ``tool_call_id``, ``image_url`` content parts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from .._wire._dialect import ChatMessage, ImagePart, ToolCallPart, ToolSpec

__all__ = [
    "MAX_IMAGES",
    "MAX_TOOLS",
    "ContentError",
    "check_tool_results",
    "image_from_url",
    "native_images",
    "native_tool_call",
    "native_tool_calls",
    "native_tools",
    "openai_tool_calls",
    "openai_tools",
]

MAX_TOOLS: Final = 128  # tool definitions per request (OpenAI's own limit)
MAX_TOOL_CALLS: Final = 128  # calls on one assistant message
MAX_IMAGES: Final = 20  # images on one message
MAX_SCHEMA_CHARS: Final = 64 << 10  # one tool's parameters, as JSON text
MAX_DESCRIPTION_CHARS: Final = 16 << 10
MAX_URL_CHARS: Final = 8 << 10  # an image URL that is not a data: URL
MAX_ID_CHARS: Final = 256  # a tool call id
MAX_SIGNATURE_CHARS: Final = 64 << 10  # a provider's opaque token on a call (Gemini's)
_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ContentError(ValueError):
    """A tool or image part of a request that the server refuses; `param` names where."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _string(value: Any, where: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ContentError(f"{where} must be a non-empty string; got {_type_name(value)}", where)
    if len(value) > limit:
        raise ContentError(f"{where} is longer than {limit} characters", where)
    return value


def _tool(name: Any, description: Any, parameters: Any, where: str) -> ToolSpec:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ContentError(
            f"{where}.name must be 1 to 64 letters, digits, '_' or '-'; got {str(name)[:80]!r}",
            f"{where}.name",
        )
    text = (
        ""
        if description is None
        else _string(description, f"{where}.description", MAX_DESCRIPTION_CHARS)
    )
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ContentError(
            f"{where}.parameters must be a JSON Schema object such as "
            '{"type": "object", "properties": {...}}',
            f"{where}.parameters",
        )
    if len(json.dumps(parameters)) > MAX_SCHEMA_CHARS:
        raise ContentError(
            f"{where}.parameters is larger than {MAX_SCHEMA_CHARS} characters of JSON",
            f"{where}.parameters",
        )
    return ToolSpec(name, text, parameters)


def _tool_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContentError(f"{where} must be a list of tools; got {_type_name(value)}", where)
    if len(value) > MAX_TOOLS:
        raise ContentError(
            f"{where} has {len(value)} tools; at most {MAX_TOOLS} are accepted", where
        )
    return value


def _unique(tools: list[ToolSpec], where: str) -> tuple[ToolSpec, ...]:
    names = [t.name for t in tools]
    for name in names:
        if names.count(name) > 1:
            raise ContentError(f"{where} declares the tool {name!r} twice", where)
    return tuple(tools)


def native_tools(value: Any) -> tuple[ToolSpec, ...]:
    """The ``tools`` of a native body: ``[{"name", "description", "parameters"}]``."""
    tools = []
    for i, item in enumerate(_tool_list(value, "tools")):
        if not isinstance(item, dict):
            raise ContentError(f"tools[{i}] must be an object; got {_type_name(item)}", "tools")
        tools.append(
            _tool(item.get("name"), item.get("description"), item.get("parameters"), f"tools[{i}]")
        )
    return _unique(tools, "tools")


def openai_tools(value: Any) -> tuple[ToolSpec, ...]:
    """The ``tools`` of an OpenAI body: ``[{"type": "function", "function": {...}}]``."""
    tools = []
    for i, item in enumerate(_tool_list(value, "tools")):
        function = item.get("function") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or item.get("type") != "function"
            or not isinstance(function, dict)
        ):
            raise ContentError(
                f'tools[{i}] must be {{"type": "function", "function": {{"name", "description", '
                '"parameters"}}; other tool types are not relayed',
                f"tools[{i}]",
            )
        tools.append(
            _tool(
                function.get("name"),
                function.get("description"),
                function.get("parameters"),
                f"tools[{i}].function",
            )
        )
    return _unique(tools, "tools")


def _arguments(value: Any, where: str) -> str:
    if value is None:
        return "{}"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        return value
    raise ContentError(
        f"{where} must be the arguments' JSON text (or an object); got {_type_name(value)}", where
    )


def _calls(
    value: Any, where: str, read: Callable[[Any, str], ToolCallPart]
) -> tuple[ToolCallPart, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ContentError(f"{where} must be a list of tool calls; got {_type_name(value)}", where)
    if len(value) > MAX_TOOL_CALLS:
        raise ContentError(f"{where} has more than {MAX_TOOL_CALLS} calls", where)
    return tuple(read(item, f"{where}[{j}]") for j, item in enumerate(value))


def _native_call(item: Any, where: str) -> ToolCallPart:
    if not isinstance(item, dict):
        raise ContentError(f"{where} must be an object with id, name and arguments", where)
    call_id = _string(item.get("id"), f"{where}.id", MAX_ID_CHARS, empty=False)
    name = _string(item.get("name"), f"{where}.name", 64, empty=False)
    arguments = _arguments(item.get("arguments"), f"{where}.arguments")
    signature = item.get("signature")  # Gemini's thoughtSignature, relayed back verbatim
    if signature is not None:
        signature = _string(signature, f"{where}.signature", MAX_SIGNATURE_CHARS)
    return ToolCallPart(call_id, name, arguments, signature)


def _openai_call(item: Any, where: str) -> ToolCallPart:
    function = item.get("function") if isinstance(item, dict) else None
    if not isinstance(function, dict) or item.get("type", "function") != "function":
        raise ContentError(
            f'{where} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}',
            where,
        )
    call_id = _string(item.get("id"), f"{where}.id", MAX_ID_CHARS, empty=False)
    name = _string(function.get("name"), f"{where}.function.name", 64, empty=False)
    arguments = _arguments(function.get("arguments"), f"{where}.function.arguments")
    return ToolCallPart(call_id, name, arguments)


def native_tool_calls(value: Any, where: str) -> tuple[ToolCallPart, ...]:
    """An assistant message's ``toolCalls`` (native)."""
    return _calls(value, where, _native_call)


def native_tool_call(item: Any, where: str) -> ToolCallPart:
    """One call in the native shape ``{"id", "name", "arguments"}``."""
    return _native_call(item, where)


def openai_tool_calls(value: Any, where: str) -> tuple[ToolCallPart, ...]:
    """An assistant message's ``tool_calls`` (OpenAI)."""
    return _calls(value, where, _openai_call)


def _image_bytes(data: Any, media_type: Any, where: str) -> ImagePart:
    if not isinstance(data, str) or not data:
        raise ContentError(f"{where}.data must be base64 text; got {_type_name(data)}", where)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ContentError(f"{where}.data is not valid base64", where) from None
    if not isinstance(media_type, str) or not media_type.lower().startswith("image/"):
        raise ContentError(
            f"{where} needs an image media type (image/png, image/jpeg, ...); "
            f"got {str(media_type)[:40]!r}",
            where,
        )
    return ImagePart(data=raw, media_type=media_type.lower())


def image_from_url(url: Any, where: str) -> ImagePart:
    """An image given by URL: http(s), or a base64 ``data:`` URL read into bytes."""
    if not isinstance(url, str):
        raise ContentError(f"{where} must be a URL string; got {_type_name(url)}", where)
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        header, comma, payload = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding.lower() != "base64":
            raise ContentError(
                f"{where} must be a base64 data: URL (data:image/png;base64,...)", where
            )
        return _image_bytes(payload, media_type, where)
    if scheme not in ("http", "https"):
        raise ContentError(f"{where} must be an http(s) or data: URL; got {url[:40]!r}", where)
    if len(url) > MAX_URL_CHARS:
        raise ContentError(f"{where} is longer than {MAX_URL_CHARS} characters", where)
    return ImagePart(url=url)


def _image_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ContentError(f"{where} must be a list of images; got {_type_name(value)}", where)
    if len(value) > MAX_IMAGES:
        raise ContentError(f"{where} has {len(value)} images; at most {MAX_IMAGES}", where)
    return value


def native_images(value: Any, where: str) -> tuple[ImagePart, ...]:
    """A user message's ``images``: ``{"url"}`` or ``{"data": <base64>, "mediaType"}``."""
    if value is None:
        return ()
    images = []
    for j, item in enumerate(_image_list(value, where)):
        spot = f"{where}[{j}]"
        if not isinstance(item, dict):
            raise ContentError(f'{spot} must be {{"url"}} or {{"data", "mediaType"}}', spot)
        if "url" in item:
            images.append(image_from_url(item["url"], f"{spot}.url"))
        else:
            images.append(_image_bytes(item.get("data"), item.get("mediaType"), spot))
    return tuple(images)


def check_tool_results(messages: Sequence[ChatMessage]) -> None:
    """Each tool message must answer a call of the assistant message before it, once.

    Only tool messages may stand between an assistant message and the results of its calls.

    Raises:
        ContentError: a tool message that answers no such call (or one already answered).
    """
    open_calls: dict[str, str] = {}
    for i, message in enumerate(messages):
        if message.role == "assistant":
            open_calls = {c.id: c.name for c in message.tool_calls}
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            if call_id not in open_calls:
                raise ContentError(
                    f"messages[{i}] answers tool call {call_id[:80]!r}, which is not a call of "
                    "the assistant message before it (or was already answered); send each "
                    "tool result right after the assistant message that made the call",
                    f"messages[{i}]",
                )
            del open_calls[call_id]
        else:
            open_calls = {}
