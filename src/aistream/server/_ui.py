"""The Vercel AI SDK's UI messages (what ``useChat`` POSTs) turned back into model messages.

Imports `_wire` and `_content` only. A UI message keeps a whole assistant turn in one
``parts`` list: text, reasoning, ``step-start`` between the model calls of a multi-step turn,
and one tool part per call that carries the call *and* its outcome (``tool-<name>`` or
``dynamic-tool``; ``state`` says how far it got). A model wants those as separate messages:
per step, an assistant message with its text and calls, then one tool message per answered
call. Without that, a client-side tool loop (``addToolOutput`` + ``sendAutomaticallyWhen``)
sends its results and the model never sees them, so it calls the tool again.

Tool parts without an outcome (``input-streaming``, ``input-available``, approval pending) and
calls the provider ran itself (``providerExecuted``) are left out with a log line: every
provider refuses a call that has no result after it. Images come as ``file`` parts with an
``image/*`` media type; other files are refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from .._wire._dialect import ChatMessage, ImagePart, ToolCallPart
from ._content import MAX_IMAGES, MAX_TOOL_CALLS, ContentError, image_from_url, native_tool_call

__all__ = ["UnsupportedPart", "ui_messages"]

log = logging.getLogger("aistream.server")

#: Parts that are not model input: skipped without a word.
_SKIP: Final = frozenset({"reasoning", "step-start", "source-url", "source-document"})
#: A tool part's states that carry its outcome.
_ANSWERED: Final = frozenset({"output-available", "output-error", "output-denied"})


class UnsupportedPart(ContentError):
    """A part this server cannot relay at all (a file that is not a user's image)."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _tool_name(part: Mapping[str, Any], kind: str) -> Any:
    return part.get("toolName") if kind == "dynamic-tool" else kind.removeprefix("tool-")


def _outcome(part: Mapping[str, Any], state: str) -> tuple[str, bool]:
    """A tool part's result as a tool message's text, and whether it is an error."""
    if state == "output-error":
        error = part.get("errorText")
        return (error if isinstance(error, str) else "the tool failed"), True
    if state == "output-denied":
        approval = part.get("approval")
        reason = approval.get("reason") if isinstance(approval, dict) else None
        why = f": {reason}" if isinstance(reason, str) and reason else ""
        return f"the user denied this tool call{why}", True
    output = part.get("output")
    if isinstance(output, str):
        return output, False
    return json.dumps(output, ensure_ascii=False, separators=(",", ":")), False


class _Step:
    """One model call of an assistant turn: its text, its answered calls and their results."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[ToolCallPart] = []
        self.results: list[ChatMessage] = []

    def messages(self) -> list[ChatMessage]:
        if not self.texts and not self.calls:
            return []
        assistant = ChatMessage("assistant", "".join(self.texts), tool_calls=tuple(self.calls))
        return [assistant, *self.results]


def _image(part: Mapping[str, Any], where: str, role: str) -> ImagePart:
    media_type = part.get("mediaType")
    if role != "user" or not isinstance(media_type, str) or not media_type.startswith("image/"):
        raise UnsupportedPart(
            f"{where} is a file ({str(media_type)[:40]}); this server relays text, tool parts "
            "and the images of user messages: send the text of the message",
            where,
        )
    return image_from_url(part.get("url"), f"{where}.url")


def ui_messages(i: int, role: str, parts: list[Any]) -> list[ChatMessage]:
    """The model messages of UI message ``messages[i]`` (see the module docstring).

    Raises:
        ContentError: a part of the wrong shape, a file that is not a user's image, or more
            images or tool calls than a message may carry.
    """
    steps = [_Step()]
    images: list[ImagePart] = []
    left_out: list[str] = []
    for j, part in enumerate(parts):
        where = f"messages[{i}].parts[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise ContentError(
                f"{where} must be an object with a type; got {_type_name(part)}", where
            )
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ContentError(f"{where}.text must be a string; got {_type_name(text)}", where)
            steps[-1].texts.append(text)
        elif kind == "step-start" and (steps[-1].texts or steps[-1].calls):
            steps.append(_Step())
        elif kind == "file":
            images.append(_image(part, where, role))
            if len(images) > MAX_IMAGES:
                raise ContentError(f"messages[{i}] has more than {MAX_IMAGES} images", where)
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            state = part.get("state")
            if role != "assistant" or state not in _ANSWERED or part.get("providerExecuted"):
                left_out.append(f"{kind} ({state})")
                continue
            step = steps[-1]
            arguments = part.get("input")
            call = native_tool_call(
                {
                    "id": part.get("toolCallId"),
                    "name": _tool_name(part, kind),
                    "arguments": arguments if isinstance(arguments, dict) else None,
                },
                where,
            )
            step.calls.append(call)
            if len(step.calls) > MAX_TOOL_CALLS:
                raise ContentError(f"{where}: more than {MAX_TOOL_CALLS} calls in a step", where)
            content, is_error = _outcome(part, state)
            step.results.append(
                ChatMessage(
                    "tool", content, tool_call_id=call.id, is_error=is_error, name=call.name
                )
            )
        elif kind not in _SKIP and not kind.startswith("data-"):
            left_out.append(kind)
    if left_out:
        log.warning(
            "messages[%d] has parts that are not relayed (%s): only text, "
            "answered tool calls and user images are",
            i,
            ", ".join(sorted(set(left_out)))[:200],
        )
    if role != "assistant":
        text = "".join(t for step in steps for t in step.texts)
        return [ChatMessage(role, text, images=tuple(images))]
    messages = [m for step in steps for m in step.messages()]
    return messages or [ChatMessage("assistant", "")]
