"""Terminal output of the ``aistream`` command: replies as they stream, status lines, colour.

Imports the public `aistream` only. Used by `_cli` (chat, serve) and `_tour` (demo).
"""

from __future__ import annotations

import os
from typing import TextIO

from aistream import AIStream, RetryEvent, ToolCall, ToolResult, Usage

__all__ = [
    "Console",
    "colour_enabled",
    "retry_line",
    "show_tools",
    "tool_call_line",
    "tool_result_line",
    "usage_line",
]


def colour_enabled(stream: TextIO) -> bool:
    """ANSI colour only on a terminal, and never with NO_COLOR set or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Console:
    """Replies go to `out` as they stream; status and errors to `err`; colour only on a tty."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self._colour = {id(out): colour_enabled(out), id(err): colour_enabled(err)}
        self._mid_line = False  # `out` holds text without its newline yet

    def _paint(self, stream: TextIO, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if code and text and self._colour[id(stream)] else text

    def write(self, text: str) -> None:
        """Stream `text` (a token) to `out` at once."""
        if text:
            self.out.write(text)
            self.out.flush()
            self._mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        """Finish the line a reply left open."""
        if self._mid_line:
            self.write("\n")

    def line(self, text: str = "", code: str = "") -> None:
        """A whole line on `out`."""
        self.end_line()
        print(self._paint(self.out, code, text), file=self.out, flush=True)

    def status(self, text: str) -> None:
        """A dim status line on `err`."""
        self.end_line()
        print(self._paint(self.err, "2", text), file=self.err, flush=True)

    def error(self, text: str) -> None:
        """One red line on `err`."""
        self.end_line()
        print(self._paint(self.err, "31", " ".join(text.split())), file=self.err, flush=True)


def usage_line(turn: Usage | None, total: Usage) -> str:
    """The usage of a turn (None: not reported) and of the conversation so far."""
    if turn is None:
        return f"[usage: conversation {total.total_tokens} tokens]"
    return (
        f"[usage: {turn.prompt_tokens} prompt + {turn.completion_tokens} completion = "
        f"{turn.total_tokens} tokens; conversation {total.total_tokens}]"
    )


def retry_line(event: RetryEvent) -> str:
    """What a retry is about to do, and why."""
    how = "resuming where it broke" if event.resume else "the reply restarts from the beginning"
    return (
        f"[retry {event.attempt} in {event.delay:.2f} s, resume={event.resume} ({how}): "
        f"{event.error}]"
    )


def tool_call_line(call: ToolCall) -> str:
    """A tool call the model made: its name and arguments."""
    return f"[tool call {call.name} {call.arguments[:200]}]"


def tool_result_line(result: ToolResult) -> str:
    """What a tool answered (or how it failed)."""
    what = "failed" if result.is_error else "returned"
    return f"[tool {result.name} {what}: {' '.join(result.content.split())[:200]}]"


def show_tools(chat: AIStream, console: Console) -> None:
    """Tool calls and results as status lines."""
    chat.on("tool-call", lambda call: console.status(tool_call_line(call)))
    chat.on("tool-result", lambda result: console.status(tool_result_line(result)))
