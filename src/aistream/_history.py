"""History you own: Messages to the wire, saved histories in and out (dump / load).

Imports `models` and `_wire` only; pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from ._wire._dialect import ChatMessage, ImagePart, ToolCallPart, ToolSpec
from .models import Message, Tool, Usage

#: The result sent, on the wire only, for a tool call the conversation went on without (a
#: stop while tools ran, or a new user message instead of results): providers refuse a
#: history whose calls have no results.
UNANSWERED = "not run: the conversation went on without this tool's result"

_EXAMPLE = "AIStream(url, messages=[{'role': 'user', 'content': 'Hi'}]) or chat.load(chat.dump())"


def wire_messages(messages: Iterable[Message]) -> tuple[ChatMessage, ...]:
    """Each message as the wire sees it; a tool message carries its call's tool name.

    Calls left without a result when another message follows get an error result here (not in
    the history), so every provider accepts the conversation.
    """
    names: dict[str, str] = {}
    waiting: dict[str, str] = {}  # calls of the last assistant message not answered yet
    out: list[ChatMessage] = []
    for m in messages:
        if waiting and m.role != "tool":
            out += [
                ChatMessage("tool", UNANSWERED, tool_call_id=i, is_error=True, name=n)
                for i, n in waiting.items()
            ]
            waiting = {}
        if not (m.tool_calls or m.images or m.role == "tool"):
            out.append(ChatMessage(m.role, m.content))
            continue
        calls = tuple(ToolCallPart(c.id, c.name, c.arguments, c.signature) for c in m.tool_calls)
        names.update((c.id, c.name) for c in m.tool_calls)
        waiting = {c.id: c.name for c in m.tool_calls} if m.role == "assistant" else waiting
        waiting.pop(m.tool_call_id or "", None)
        images = tuple(ImagePart(i.url, i.data, i.media_type) for i in m.images)
        out.append(
            ChatMessage(
                m.role,
                m.content,
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
                is_error=m.is_error,
                images=images,
                name=names.get(m.tool_call_id or ""),
            )
        )
    return tuple(out)


def wire_tools(tools: Iterable[Tool]) -> tuple[ToolSpec, ...]:
    """The tools' definitions as the wire sends them."""
    return tuple(ToolSpec(t.name, t.description, t.parameters) for t in tools)


def coerce_messages(messages: object, where: str = "messages") -> list[Message]:
    """A saved history (Messages or their ``model_dump()`` dicts) as fresh Messages.

    Raises:
        TypeError: not a list of Messages or dicts.
        ValueError: a message that does not validate (which one, and why).
    """
    if messages is None:
        return []
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise TypeError(
            f"{where} must be a list of Messages or dicts, not {type(messages).__name__}; "
            f"e.g. {_EXAMPLE}"
        )
    out: list[Message] = []
    for i, item in enumerate(messages):
        if isinstance(item, Message):
            out.append(item.model_copy(deep=True))
            continue
        if not isinstance(item, Mapping):
            raise TypeError(
                f"{where}[{i}] must be a Message or a dict, not {type(item).__name__}; "
                f"e.g. {_EXAMPLE}"
            )
        try:
            out.append(Message.model_validate(dict(item)))
        except ValidationError as exc:
            raise ValueError(f"{where}[{i}] is not a valid message: {_reasons(exc)}") from None
    return out


def dump(messages: Iterable[Message], usage: Usage) -> dict[str, Any]:
    """A JSON-safe dict of a conversation: ``{"messages": [...], "usage": {...}}``."""
    return {
        "messages": [m.model_dump(mode="json") for m in messages],
        "usage": usage.model_dump(mode="json"),
    }


def load(data: object) -> tuple[list[Message], Usage]:
    """The messages and usage totals of what `dump` made (or its JSON text).

    Raises:
        TypeError, ValueError: `data` is not such a dict (what is wrong, and where).
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"load() got text that is not JSON ({exc})") from None
    if not isinstance(data, Mapping) or "messages" not in data:
        raise TypeError(
            'load() takes what dump() returns: {"messages": [...], "usage": {...}}; '
            f"got {type(data).__name__}"
        )
    messages = coerce_messages(data["messages"], "data['messages']")
    try:
        usage = Usage.model_validate(data.get("usage") or {})
    except ValidationError as exc:
        raise ValueError(f"data['usage'] is not valid usage: {_reasons(exc)}") from None
    return messages, usage


def _reasons(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(parts)
