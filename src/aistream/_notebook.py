"""How conversations look in Jupyter: Markdown and HTML forms, and the live reply display.

Imports the stdlib only. IPython is imported by `live()` alone, and only when it is already
loaded and running a kernel (a notebook): a script never loads it.

Model text is shown as text: ``&``, ``<`` and ``>`` become entities in Markdown and HTML, so a
``<script>`` in a reply is shown, never run and never stripped by the front end's sanitizer;
Markdown syntax in a reply (emphasis, lists, code) is rendered, as the model meant it.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._stream import AIStream
    from .models import Message, RetryEvent, ToolCall, ToolResult, Usage

__all__ = [
    "LiveDisplay",
    "chat_html",
    "chat_markdown",
    "escape_markdown",
    "live",
    "message_html",
    "message_markdown",
    "usage_html",
    "usage_markdown",
]

_BACKTICKS = re.compile(r"`+")


def escape_markdown(text: str) -> str:
    """`text` for a Markdown document: HTML-significant characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str, info: str = "") -> str:
    """A fenced code block holding `text` verbatim (the fence outgrows any backtick run)."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def usage_line(
    usage: Usage | None,
    *,
    first_token: float | None = None,
    finish_reason: str | None = None,
    elapsed: float | None = None,
) -> str:
    """One line: tokens in and out, time to first token, how the reply ended."""
    parts = []
    if usage is not None:
        parts.append(
            f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion = "
            f"{usage.total_tokens} tokens"
        )
    if first_token is not None:
        parts.append(f"first token {first_token:.2f} s")
    if elapsed is not None:
        parts.append(f"{elapsed:.2f} s")
    if finish_reason:
        parts.append(f"finish: {finish_reason}")
    return " · ".join(parts)


def usage_markdown(usage: Usage) -> str:
    return f"*{usage_line(usage)}*"


def usage_html(usage: Usage) -> str:
    return f"<i>{html.escape(usage_line(usage))}</i>"


def _code(text: str) -> str:
    """Inline code holding `text` verbatim."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"`{text}`"


def _reasoning_markdown(reasoning: str) -> str:
    return f"<details><summary>Reasoning</summary>\n\n{escape_markdown(reasoning)}\n\n</details>"


def _call_markdown(call: ToolCall) -> str:
    head = f"**Tool call** {_code(call.name)} {_code(call.id)}"
    return f"{head}\n\n{_fence(call.arguments, 'json')}"


def _result_markdown(result: ToolResult) -> str:
    label = "Tool error" if result.is_error else "Tool result"
    head = f"**{label}** {_code(result.name)} {_code(result.call_id)}"
    return f"{head}\n\n{_fence(result.content)}"


def reply_markdown(
    text: str,
    *,
    reasoning: str = "",
    calls: Iterable[ToolCall] = (),
    results: Iterable[ToolResult] = (),
    footer: str = "",
) -> str:
    """An assistant reply: reasoning folded, the text, tool calls and results, a footer."""
    blocks = [_reasoning_markdown(reasoning)] if reasoning else []
    if text:
        blocks.append(escape_markdown(text))
    blocks += [_call_markdown(c) for c in calls]
    blocks += [_result_markdown(r) for r in results]
    if footer:
        blocks.append(f"*{escape_markdown(footer)}*")
    return "\n\n".join(blocks)


def message_markdown(message: Message) -> str:
    """A message as Markdown: its role, then its content as text."""
    if message.role == "assistant":
        footer = usage_line(message.usage, finish_reason=message.finish_reason)
        body = reply_markdown(
            message.content,
            reasoning=message.reasoning or "",
            calls=message.tool_calls,
            footer=footer,
        )
    elif message.role == "tool":
        label = "error" if message.is_error else "result"
        body = f"{label} of {escape_markdown(message.tool_call_id or '')}\n\n"
        body += _fence(message.content)
    else:
        body = escape_markdown(message.content)
        if message.images:
            body += f"\n\n*{len(message.images)} image(s)*"
    return f"**{message.role}**\n\n{body}" if body else f"**{message.role}**"


def message_html(message: Message) -> str:
    """A message as HTML: text escaped, whitespace kept."""
    parts = [f"<b>{message.role}</b>"]
    if message.reasoning:
        parts.append(
            "<details><summary>Reasoning</summary>"
            f'<div style="white-space: pre-wrap">{html.escape(message.reasoning)}</div></details>'
        )
    if message.content:
        parts.append(f'<div style="white-space: pre-wrap">{html.escape(message.content)}</div>')
    for call in message.tool_calls:
        parts.append(
            f"<div>Tool call <code>{html.escape(call.name)}</code> "
            f"<pre>{html.escape(call.arguments)}</pre></div>"
        )
    footer = usage_line(message.usage, finish_reason=message.finish_reason)
    if footer and message.role == "assistant":
        parts.append(f"<i>{html.escape(footer)}</i>")
    return '<div class="aistream-message">' + "".join(parts) + "</div>"


def chat_markdown(chat: AIStream) -> str:
    """The transcript: every message, then the conversation's usage totals."""
    messages = chat.messages
    blocks = [message_markdown(m) for m in messages] or ["*no messages yet*"]
    blocks.append(f"*total: {usage_line(chat.usage)}*")
    return "\n\n".join(blocks)


def chat_html(chat: AIStream) -> str:
    rows = [message_html(m) for m in chat.messages] or ["<i>no messages yet</i>"]
    rows.append(f"<i>total: {html.escape(usage_line(chat.usage))}</i>")
    return '<div class="aistream-chat">' + "<hr>".join(rows) + "</div>"


# --- the live display ----------------------------------------------------------------------


def _kernel_display() -> Any:
    """IPython.display when this process is a Jupyter kernel, else None (nothing imported)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    import IPython.display

    return IPython.display


def live(chat: AIStream, interval: float = 0.1) -> LiveDisplay | None:
    """A LiveDisplay attached to `chat`, or None outside a notebook."""
    display = _kernel_display()
    if display is None:
        return None
    shown = LiveDisplay(display, interval=interval)
    shown.attach(chat)
    return shown


class LiveDisplay:
    """One reply shown as Markdown in one output, updated in place while it streams.

    Updates go through an IPython display handle, at most one per `interval` seconds while
    tokens arrive (a timer sends the last one), and once more at the end with the footer.
    """

    def __init__(
        self,
        display: Any,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._display = display
        self._interval = interval
        self._clock = clock
        self._handle: Any = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        self._results: list[ToolResult] = []
        self._started: float | None = None
        self._first: float | None = None
        self._reply: Message | None = None
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[tuple[str, Callable[..., Any]]] = []
        self.updates = 0  #: how many times the output was written (tests, curiosity)

    def attach(self, chat: AIStream) -> None:
        self._listeners = [
            ("streaming-start", self._on_start),
            ("token", self._on_token),
            ("reasoning", self._on_reasoning),
            ("tool-call", self._on_call),
            ("tool-result", self._on_result),
            ("retry", self._on_retry),
            ("message", self._on_message),
        ]
        for event, listener in self._listeners:
            chat.add_listener(event, listener)  # pyee's untyped twin of on(): `event` is a str here

    def close(self, chat: AIStream) -> None:
        """Detach and write the final form (the whole reply and its footer)."""
        for event, listener in self._listeners:
            chat.remove_listener(event, listener)
        self._listeners = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handle is not None:
            self._write(final=True)

    def markdown(self, final: bool = False) -> str:
        """What the output shows now."""
        footer = ""
        if final:
            reply = self._reply
            elapsed = None if self._started is None else self._clock() - self._started
            footer = usage_line(
                reply.usage if reply else None,
                first_token=self._first,
                finish_reason=reply.finish_reason if reply else None,
                elapsed=elapsed,
            )
        return (
            reply_markdown(
                "".join(self._text),
                reasoning="".join(self._reasoning),
                calls=self._calls,
                results=self._results,
                footer=footer,
            )
            or "*…*"
        )

    # --- listeners ---------------------------------------------------------------------------

    def _on_start(self) -> None:
        if self._started is None:
            self._started = self._clock()
        if self._handle is None:
            self._handle = self._display.display(self._display.Markdown("*…*"), display_id=True)
            self.updates += 1

    def _on_token(self, text: str) -> None:
        self._content()
        self._text.append(text)
        self._changed()

    def _on_reasoning(self, text: str) -> None:
        self._content()
        self._reasoning.append(text)
        self._changed()

    def _on_call(self, call: ToolCall) -> None:
        self._content()
        self._calls.append(call)
        self._changed()

    def _on_result(self, result: ToolResult) -> None:
        self._results.append(result)
        self._changed()

    def _on_retry(self, event: RetryEvent) -> None:
        if not event.resume:  # the reply restarts from its beginning
            self._text.clear()
            self._reasoning.clear()
            self._changed()

    def _on_message(self, message: Message) -> None:
        if message.role == "assistant":
            self._reply = message

    # --- throttled writes ----------------------------------------------------------------------

    def _content(self) -> None:
        if self._first is None and self._started is not None:
            self._first = self._clock() - self._started

    def _changed(self) -> None:
        if self._handle is None or self._timer is not None:
            return
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            self._write()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._write()

    def _write(self, final: bool = False) -> None:
        self._last = self._clock()
        self._handle.update(self._display.Markdown(self.markdown(final)))
        self.updates += 1
