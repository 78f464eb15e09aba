"""Typed listener registration for AIStream: each event name with its payload, and a warning
for a name that is no event.

pyee takes any string: ``chat.on("tokens", ...)`` registered a listener that never fired, and
listener parameters were ``Any``. Here ``on`` and ``once`` are overloaded on the eleven event
names (``message`` … ``tool-result``), so mypy and IDEs know that a ``token`` listener gets a
``str`` and a ``usage`` listener a ``Usage``, and reject an unknown name; at run time a listener
for an unknown name gets a `UserWarning` naming the closest event. pyee's ``cancel()`` (which
cancels pending listener tasks, not the stream) is replaced by a ``stop()``. Imports `_emitter`,
`models`, `errors` and `types`.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, overload

import pyee

from ._emitter import SafeEmitter
from .errors import AIStreamError
from .models import Message, RetryEvent, ToolCall, ToolResult, Usage
from .types import EventName

__all__ = ["EVENT_NAMES", "TypedEmitter"]

#: Every event an AIStream emits: the table in the README, ``message`` to ``tool-result``.
EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))
#: pyee's own event, fired on every registration: allowed without a warning.
_PYEE_EVENTS = frozenset({"new_listener"})
#: Names people reach for that are not ours, and the event they mean.
_MEANT = {
    "done": "streaming-end",
    "end": "streaming-end",
    "finish": "streaming-end",
    "complete": "streaming-end",
    "start": "streaming-start",
    "delta": "token",
    "text": "token",
    "chunk": "token",
    "thinking": "reasoning",
}
_OWN_FILES = (str(Path(__file__).parent), str(Path(pyee.__file__).parent))


_OnMessage = Callable[[Message], Any]
_OnText = Callable[[str], Any]
_OnUsage = Callable[[Usage], Any]
_OnRetry = Callable[[RetryEvent], Any]
_OnError = Callable[[AIStreamError], Any]
_OnToolCall = Callable[[ToolCall], Any]
_OnToolResult = Callable[[ToolResult], Any]
_OnNothing = Callable[[], Any]


def closest_event(name: str) -> str:
    """The event a mistyped `name` most likely means (``"tokens"`` → ``"token"``)."""
    key = name.strip().lower().replace("_", "-")
    if key in EVENT_NAMES:
        return key
    if key in _MEANT:
        return _MEANT[key]
    match = difflib.get_close_matches(key, sorted(EVENT_NAMES), n=1, cutoff=0.0)
    return match[0] if match else "token"


def _stacklevel() -> int:
    """The stack level of the first frame outside aistream and pyee: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_FILES):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


class TypedEmitter(SafeEmitter):
    """SafeEmitter with ``on`` / ``once`` typed by event name and unknown names warned about."""

    # Narrower than pyee's `event: str`: that is the point (an unknown name is a type error).
    @overload  # type: ignore[override]
    def on(self, event: Literal["message"], f: _OnMessage) -> _OnMessage: ...
    @overload
    def on(self, event: Literal["message"]) -> Callable[[_OnMessage], _OnMessage]: ...
    @overload
    def on(self, event: Literal["streaming-start"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def on(self, event: Literal["streaming-start"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def on(self, event: Literal["token"], f: _OnText) -> _OnText: ...
    @overload
    def on(self, event: Literal["token"]) -> Callable[[_OnText], _OnText]: ...
    @overload
    def on(self, event: Literal["usage"], f: _OnUsage) -> _OnUsage: ...
    @overload
    def on(self, event: Literal["usage"]) -> Callable[[_OnUsage], _OnUsage]: ...
    @overload
    def on(self, event: Literal["retry"], f: _OnRetry) -> _OnRetry: ...
    @overload
    def on(self, event: Literal["retry"]) -> Callable[[_OnRetry], _OnRetry]: ...
    @overload
    def on(self, event: Literal["streaming-end"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def on(self, event: Literal["streaming-end"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def on(self, event: Literal["error"], f: _OnError) -> _OnError: ...
    @overload
    def on(self, event: Literal["error"]) -> Callable[[_OnError], _OnError]: ...
    @overload
    def on(self, event: Literal["reset"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def on(self, event: Literal["reset"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def on(self, event: Literal["reasoning"], f: _OnText) -> _OnText: ...
    @overload
    def on(self, event: Literal["reasoning"]) -> Callable[[_OnText], _OnText]: ...
    @overload
    def on(self, event: Literal["tool-call"], f: _OnToolCall) -> _OnToolCall: ...
    @overload
    def on(self, event: Literal["tool-call"]) -> Callable[[_OnToolCall], _OnToolCall]: ...
    @overload
    def on(self, event: Literal["tool-result"], f: _OnToolResult) -> _OnToolResult: ...
    @overload
    def on(self, event: Literal["tool-result"]) -> Callable[[_OnToolResult], _OnToolResult]: ...
    def on(self, event: str, f: Callable[..., Any] | None = None) -> Any:
        """Register `f` for `event` (or, without `f`, return a decorator that does)."""
        return super().on(event, f) if f is not None else super().on(event)

    # Narrower than pyee's `event: str`: that is the point (an unknown name is a type error).
    @overload  # type: ignore[override]
    def once(self, event: Literal["message"], f: _OnMessage) -> _OnMessage: ...
    @overload
    def once(self, event: Literal["message"]) -> Callable[[_OnMessage], _OnMessage]: ...
    @overload
    def once(self, event: Literal["streaming-start"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def once(self, event: Literal["streaming-start"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def once(self, event: Literal["token"], f: _OnText) -> _OnText: ...
    @overload
    def once(self, event: Literal["token"]) -> Callable[[_OnText], _OnText]: ...
    @overload
    def once(self, event: Literal["usage"], f: _OnUsage) -> _OnUsage: ...
    @overload
    def once(self, event: Literal["usage"]) -> Callable[[_OnUsage], _OnUsage]: ...
    @overload
    def once(self, event: Literal["retry"], f: _OnRetry) -> _OnRetry: ...
    @overload
    def once(self, event: Literal["retry"]) -> Callable[[_OnRetry], _OnRetry]: ...
    @overload
    def once(self, event: Literal["streaming-end"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def once(self, event: Literal["streaming-end"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def once(self, event: Literal["error"], f: _OnError) -> _OnError: ...
    @overload
    def once(self, event: Literal["error"]) -> Callable[[_OnError], _OnError]: ...
    @overload
    def once(self, event: Literal["reset"], f: _OnNothing) -> _OnNothing: ...
    @overload
    def once(self, event: Literal["reset"]) -> Callable[[_OnNothing], _OnNothing]: ...
    @overload
    def once(self, event: Literal["reasoning"], f: _OnText) -> _OnText: ...
    @overload
    def once(self, event: Literal["reasoning"]) -> Callable[[_OnText], _OnText]: ...
    @overload
    def once(self, event: Literal["tool-call"], f: _OnToolCall) -> _OnToolCall: ...
    @overload
    def once(self, event: Literal["tool-call"]) -> Callable[[_OnToolCall], _OnToolCall]: ...
    @overload
    def once(self, event: Literal["tool-result"], f: _OnToolResult) -> _OnToolResult: ...
    @overload
    def once(self, event: Literal["tool-result"]) -> Callable[[_OnToolResult], _OnToolResult]: ...
    def once(self, event: str, f: Callable[..., Any] | None = None) -> Any:
        """Like `on`, for the next emission of `event` only."""
        return super().once(event, f) if f is not None else super().once(event)

    def _add_event_handler(self, event: str, k: Callable[..., Any], v: Callable[..., Any]) -> None:
        if event not in EVENT_NAMES and event not in _PYEE_EVENTS:
            warnings.warn(
                f"{event!r} is not an AIStream event, so this listener will never be called; "
                f"did you mean {closest_event(event)!r}? The events are: "
                + ", ".join(sorted(EVENT_NAMES)),
                UserWarning,
                stacklevel=_stacklevel(),
            )
        super()._add_event_handler(event, k, v)

    def cancel(self) -> None:
        """Stop the stream, as `stop()` does (pyee's ``cancel()`` would only cancel pending
        listener tasks and leave the reply running)."""
        self.stop()

    def stop(self) -> None:
        """End the in-flight stream (AIStream defines it)."""
        raise NotImplementedError
