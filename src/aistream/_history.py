"""History to the wire: public Messages and Tools as the `_wire` dataclasses a dialect sends.

Imports `models` and `_wire` only; pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._wire._dialect import ChatMessage, ImagePart, ToolCallPart, ToolSpec
from .models import Message, Tool


def wire_messages(messages: Iterable[Message]) -> tuple[ChatMessage, ...]:
    """Each message as the wire sees it; a tool message carries its call's tool name."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for m in messages:
        if not (m.tool_calls or m.images or m.role == "tool"):
            out.append(ChatMessage(m.role, m.content))
            continue
        calls = tuple(ToolCallPart(c.id, c.name, c.arguments, c.signature) for c in m.tool_calls)
        names.update((c.id, c.name) for c in m.tool_calls)
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
