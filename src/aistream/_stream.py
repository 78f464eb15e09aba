"""AIStream: the conversation, and the turn that streams each reply.

Owns history, usage totals and the order of events. `_Turn` is one turn's lifecycle, from
send() to its settled reply (its docstring names the phases); `_Reply` accumulates what one
model call streamed. The decision after a failed attempt is `_retry.decide`; every HTTP call
is `_transport`'s (this module imports httpx for annotations only). Imports `_transport`,
`_retry`, `_listeners` (pyee), `_sync`, `_tokens`, `_otel`, `_notebook`, `_args`, `_redact`,
`_wire`, `models`, `errors`, `types`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from . import _notebook, _otel
from ._args import check_arguments, coerce_retry
from ._history import coerce_messages, wire_messages, wire_tools
from ._history import dump as dump_history
from ._history import load as load_history
from ._listeners import TypedEmitter
from ._redact import redact_url
from ._retry import IN_STREAM_STATUS, MAX_SERVER_DELAY, GiveUp, RetryBudget, decide
from ._sync import run_sync
from ._tokens import END, TokenStream
from ._tools import coerce_tools, parse_result, run_calls
from ._transport import CANCEL_TIMEOUT, AttemptState, ClientLease, Transport
from ._wire._dialect import ChatRequest, Dialect, RequestSpec
from ._wire._events import (
    Done,
    FinishReason,
    Heartbeat,
    Metadata,
    ReasoningDelta,
    ServerError,
    Skipped,
    StreamEvent,
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._wire._registry import dialect_factory
from ._wire._text import SurrogateJoiner, has_surrogate
from .errors import AIStreamError, APIStatusError, ConnectionLostError, StreamBusyError
from .models import Image, Message, RetryConfig, RetryEvent, Tool, ToolCall, ToolResult, Usage

if TYPE_CHECKING:
    import httpx  # the type of client=; the calls are _transport's

from .types import (
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_REASONING,
    EVENT_RESET,
    EVENT_RETRY,
    EVENT_STREAMING_END,
    EVENT_STREAMING_START,
    EVENT_TOKEN,
    EVENT_TOOL_CALL,
    EVENT_TOOL_RESULT,
    EVENT_USAGE,
    ProtocolName,
)

log = logging.getLogger("aistream")

_BLOCK = 64  # reply deltas kept apart before they are joined (memory of long replies)
_DEFAULT_RETRY = RetryConfig()  # models are frozen: one instance serves every AIStream
_NO_USAGE = Usage()
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def _estimate_tokens(chars: int) -> int:
    """About four characters per token: the estimate used until a server reports usage."""
    return math.ceil(chars / 4)


Phase = Literal["starting", "attempting", "backing off", "stopping", "settled", "failed"]


class _Reply:
    """What one model call has streamed so far: text, reasoning, tool calls, finish, usage.

    A restart (a retry that cannot resume, or a server that started a new stream instead of
    resuming ours) replaces the whole value: ``turn.reply = _Reply()``.
    """

    __slots__ = (
        "blocks",
        "chars",
        "finish_reason",
        "next_index",
        "parts",
        "reasoning",
        "reasoning_joiner",
        "text_joiner",
        "tool_calls",
        "usage",
    )

    def __init__(self) -> None:
        self.parts: list[str] = []  # the latest deltas of the reply text
        self.blocks: list[str] = []  # earlier deltas, joined _BLOCK at a time
        self.chars = 0  # characters in `blocks` and `reasoning` (max_reply_chars)
        self.reasoning: list[str] = []
        self.text_joiner = SurrogateJoiner()  # characters split into UTF-16 halves, rejoined
        self.reasoning_joiner = SurrogateJoiner()
        self.tool_calls: list[ToolCall] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None  # as the server reported it (None: estimate at the end)
        self.next_index = 0  # the native token index expected next (resume de-duplication)

    def text(self) -> str:
        """The reply text so far."""
        return "".join([*self.blocks, *self.parts])

    def has_text(self) -> bool:
        return bool(self.parts or self.blocks)


class _Turn:
    """One turn, from send() to its settled reply, however many attempts it takes.

    The phases (`phase`), and the method that moves the turn into each::

        starting ──_attempts──▶ attempting ──the stream ends──▶ settled  (_run → _settle)
                                  │    ▲
                  retryable failure    │ the delay is over
                                  ▼    │
                               backing off                      (_attempts: retry.decide)
                                  │
                  not retryable, or out of retries ──▶ failed   (_run re-raises the error)

        any phase ── stop(), or the caller cancelled ──▶ stopping ──▶ settled ("stopped")

    Two side exits do not change the phase: a *restart* replaces `reply` with an empty one
    (`_attempts` on a retry that cannot resume, `_other_event` on a new stream id), and
    *discard* (reset() during the turn) settles without touching history or totals.

    A turn holds one `reply` at a time, with its own retry budget (`_attempts`). A turn is one
    model call: a send with tools makes one turn per step, inside one `_Send`.
    """

    __slots__ = (
        "base",
        "cancel_request",
        "client",
        "cut",
        "discard",
        "loop",
        "phase",
        "prompt_estimate",
        "queue",
        "reply",
        "retries",
        "stop_requested",
        "stream_id",
        "task",
        "telemetry",
    )

    def __init__(self, base: Usage, prompt_estimate: int, queue: asyncio.Queue[Any] | None) -> None:
        self.phase: Phase = "starting"
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.client: httpx.AsyncClient | None = None
        self.cancel_request: asyncio.Task[None] | None = None  # the DELETE, once stop() sent it
        self.base = base  # conversation totals before this turn
        self.prompt_estimate = prompt_estimate
        self.queue = queue  # tokens() reads the text here
        self.stop_requested = False
        self.discard = False
        self.cut = False  # ended at max_reply_chars: settles as "length", not "stopped"
        self.stream_id: str | None = None  # the server's id of the generation (native)
        self.retries = 0
        self.telemetry: _otel.Step | None = None  # set per model call when OpenTelemetry is on
        self.reply = _Reply()

    def enter(self, phase: Phase) -> None:
        """Move to `phase`, unless stop() came first: stopping wins until the turn settles."""
        if not self.stop_requested:
            self.phase = phase

    def __repr__(self) -> str:
        return f"<_Turn {self.phase} retries={self.retries} stream_id={self.stream_id!r}>"


class _Send:
    """One send() (or retry(), send_tool_results()): its options, whether stop() ended it, the
    tool handlers running now. It spans every turn (model call) of a tool loop and the tools
    run between them, so the AIStream stays busy and stop() ends all of it."""

    __slots__ = ("handlers", "loop", "options", "own_pool", "stop_requested")

    def __init__(self, options: Mapping[str, Any], own_pool: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.options = options
        # send_sync's: its loop ends with the call, so it must not borrow (or keep) a pool
        # of the caller's, nor the user's client=, which belongs to another loop.
        self.own_pool = own_pool
        self.stop_requested = False
        self.handlers: asyncio.Future[list[ToolResult]] | None = None


class AIStream(TypedEmitter):
    """A conversation with a model behind a streaming endpoint; an event emitter (pyee).

    Args:
        endpoint: Full URL of the streaming chat endpoint.
        model: Model name sent with each request.
        protocol: "native", "openai", "anthropic", "ollama", "responses", "gemini" or "auto"
            (by the endpoint's path).
        headers: Extra request headers (e.g. Authorization); never logged or shown.
        secret_headers: Names of more headers whose values are secrets, joining the built-in
            ones (``Authorization``, ``x-api-key``, ``api-key``, cookies, ``x-goog-api-key``):
            their values are masked in logs, error messages and error bodies.
        system_prompt: Sent with every request as the dialect expects.
        retry: How failed attempts are retried: a RetryConfig or a dict of its fields
            (default RetryConfig()).
        timeout: Connect timeout and longest silence on the connection, seconds (None: none).
        stall_timeout: Longest wait between content events, seconds; heartbeats do not count
            (None: disabled).
        on_token, on_usage, on_error: Shortcuts for ``on("token", ...)`` etc.
        client: An httpx.AsyncClient to use (borrowed, never closed). Without one, every
            AIStream in the event loop shares one pool that aistream makes and closes when
            the last of them is closed.
        options: Extra fields merged into every request body (e.g. ``{"temperature": 0}``).
        max_event_bytes: Largest single stream event accepted (default 1 MiB).
        sleep: Awaitable sleep used for backoff waits (injected in tests).
        rng: Random source in [0, 1) for jitter (injected in tests).
        tools: Functions (or coroutine functions) and `Tool` objects the model may call;
            a function's schema comes from its type hints and docstring. A reply asking for
            tools that all have handlers runs them and streams the next reply.
        max_steps: Most model calls one send makes (default 8); the last reply's calls are
            then returned unrun (``finish_reason="tool_calls"``).
        max_reply_chars: Characters one reply may bring (text and reasoning; default
            10,000,000, None for no bound). A longer one is cut there, as by `stop()`, and
            settles with ``finish_reason="length"`` and a WARNING: a server sending without
            end cannot exhaust the memory of the process.
        messages: A history to start from: Messages or their ``model_dump()`` dicts.

    ```py
    chat = AIStream("http://127.0.0.1:8000/api/chat", on_token=lambda t: print(t, end=""))
    reply = await chat.send("Hello")
    ```
    """

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        protocol: ProtocolName = "auto",
        headers: Mapping[str, str] | None = None,
        secret_headers: Iterable[str] = (),
        system_prompt: str | None = None,
        retry: RetryConfig | Mapping[str, Any] | None = None,
        timeout: float | None = 30.0,
        stall_timeout: float | None = 120.0,
        on_token: Callable[[str], Any] | None = None,
        on_usage: Callable[[Usage], Any] | None = None,
        on_error: Callable[[AIStreamError], Any] | None = None,
        client: httpx.AsyncClient | None = None,
        options: Mapping[str, Any] | None = None,
        max_event_bytes: int = 1 << 20,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        tools: Sequence[Tool | Callable[..., Any]] | None = None,
        max_steps: int = 8,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        max_reply_chars: int | None = 10_000_000,
    ) -> None:
        super().__init__()
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"endpoint must be an http:// or https:// URL such as "
                f"'http://127.0.0.1:8000/api/chat'; got {redact_url(str(endpoint))!r}"
            )
        check_arguments(
            model=model,
            headers=headers,
            system_prompt=system_prompt,
            timeout=timeout,
            stall_timeout=stall_timeout,
            listeners={"on_token": on_token, "on_usage": on_usage, "on_error": on_error},
            client=client,
            client_class=ClientLease.client_class,
            options=options,
            max_event_bytes=max_event_bytes,
            sleep=sleep,
            rng=rng,
            max_steps=max_steps,
            max_reply_chars=max_reply_chars,
        )
        if not isinstance(protocol, str):
            raise TypeError(f"protocol must be a str such as 'openai', not {protocol!r}")
        secret_names = () if isinstance(secret_headers, str) else tuple(secret_headers)
        if isinstance(secret_headers, str) or not all(isinstance(n, str) for n in secret_names):
            raise TypeError(
                "secret_headers must be a list of header names, e.g. "
                "AIStream(url, headers={'X-Auth-Token': t}, secret_headers=['X-Auth-Token'])"
            )
        self._endpoint = endpoint
        self._dialect_factory: Callable[[], Dialect] = dialect_factory(protocol, endpoint)
        self._protocol = self._dialect_factory.name  # type: ignore[attr-defined]
        self._provider = _otel.provider_name(self._protocol)
        self._server = (parts.hostname or "", parts.port)
        self._model = model
        self._system_prompt = system_prompt
        self._options = dict(options) if options else _NO_OPTIONS
        self._retry = coerce_retry(retry, _DEFAULT_RETRY)
        self._transport = Transport(
            headers=headers or {},
            secret_headers=secret_names,
            timeout=timeout,
            stall_timeout=stall_timeout,
            max_event_bytes=max_event_bytes,
        )
        self._clients = ClientLease(client)
        self._sleep = sleep
        self._rng = rng
        self._tools = coerce_tools(tools)
        self._tool_specs = wire_tools(self._tools.values())
        self._max_steps = max_steps
        self._max_reply_chars = max_reply_chars
        self._messages: list[Message] = coerce_messages(messages)
        self._usage = _NO_USAGE
        self._turn: _Turn | None = None
        self._send: _Send | None = None
        # What fork() passes to the new AIStream (listeners are not settings).
        self._settings: dict[str, Any] = {
            "model": model,
            "protocol": protocol,
            "headers": headers,
            "secret_headers": secret_names,
            "system_prompt": system_prompt,
            "retry": self._retry,
            "timeout": timeout,
            "stall_timeout": stall_timeout,
            "client": client,
            "options": options,
            "max_event_bytes": max_event_bytes,
            "sleep": sleep,
            "rng": rng,
            "tools": list(self._tools.values()),
            "max_steps": max_steps,
            "max_reply_chars": max_reply_chars,
        }
        self._display = False  # chat.display(): every later turn shown live in Jupyter
        self._abandoned_turn: asyncio.Task[Message] | None = None  # stopped by a `break`
        for event, handler in (
            (EVENT_TOKEN, on_token),
            (EVENT_USAGE, on_usage),
            (EVENT_ERROR, on_error),
        ):
            if handler is not None:
                self.add_listener(event, handler)

    # --- public state -----------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """A copy of the conversation history."""
        return [_copy(m) for m in self._messages]

    @property
    def usage(self) -> Usage:
        """Usage totals for the whole conversation (an immutable value)."""
        return self._usage

    @property
    def is_streaming(self) -> bool:
        """True while a send is in flight (its model calls and the tools run between them)."""
        return self._turn is not None or self._send is not None

    def get_messages(self) -> list[Message]:
        """Same as `messages`."""
        return self.messages

    def get_usage(self) -> Usage:
        """Same as `usage`."""
        return self.usage

    def get_is_streaming(self) -> bool:
        """Same as `is_streaming`."""
        return self.is_streaming

    def __repr__(self) -> str:
        return (
            f"AIStream({redact_url(self._endpoint)!r}, protocol={self._protocol!r}, "
            f"model={self._model!r}, messages={len(self._messages)}, "
            f"streaming={self.is_streaming})"
        )

    # --- turns ------------------------------------------------------------------------------

    async def send(
        self,
        content: str,
        *,
        images: Sequence[Image] | None = None,
        options: Mapping[str, Any] | None = None,
        display: bool | None = None,
    ) -> Message:
        """Add a user message and stream the assistant reply; with `tools`, run the tools it
        asks for and stream the next reply, until one asks for none (or `max_steps`).

        Args:
            content: The user's text.
            images: Images for the model to see with it (`Image`: a URL, bytes or a file).
            options: Request fields for this send's model calls, merged over ``options=``.
            display: Show the reply live in Jupyter (see `display()`).

        Returns:
            The last assistant Message (``finish_reason="stopped"`` when stop() ended it;
            ``"tool_calls"`` when it asks for tools you answer with `send_tool_results`).

        Raises:
            StreamBusyError: a turn is already streaming.
            ValueError: the provider cannot carry the request (an image URL for Ollama, say);
                nothing was sent and the history is unchanged.
            APIStatusError: the server refused the request or reported an error.
            ConnectionLostError, StreamTimeoutError: retries ran out.
            ProtocolError: the server sent something unreadable or oversized.

        With ``display=True`` (or after `display()`), in Jupyter the reply is shown as Markdown
        that updates in place while it streams; elsewhere nothing is shown.

        ```py
        reply = await chat.send("Hello")
        reply = await chat.send("What is this?", images=[Image.from_path("cat.png")])
        ```
        """
        return await self._send_user(content, images, options, display, own_pool=False)

    async def _send_user(
        self,
        content: str,
        images: Sequence[Image] | None,
        options: Mapping[str, Any] | None,
        display: bool | None,
        *,
        own_pool: bool,
    ) -> Message:
        await self._settle_abandoned()
        user, options = self._user_message(content, images, options)
        shown = self._show(display)
        try:
            return await self._converse(self._open_send(options, own_pool), None, user=user)
        finally:
            if shown is not None:
                shown.close(self)

    def tokens(
        self,
        content: str,
        *,
        images: Sequence[Image] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> TokenStream:
        """Send `content` and yield the reply's text deltas as they arrive (every step's,
        when tools run in between).

        The turn starts at the first iteration. Leaving the ``async for`` early (``break``,
        an exception) stops the turn at once, as ``stop()`` does: the partial reply stays in
        history with ``finish_reason="stopped"`` and the next ``send()`` works right away.
        The iterator is also an async context manager, and ``aclose()`` waits for the stopped
        turn to settle. If a reply restarts after a drop without ids, the text is yielded
        again from its start (the ``retry`` event says ``resume=False``).

        ```py
        async for token in chat.tokens("Tell me a story"):
            print(token, end="", flush=True)
            if token.endswith("."):
                break            # the turn stops here; the partial reply is kept
        ```
        """

        async def begin() -> tuple[asyncio.Queue[Any], asyncio.Task[Message]]:
            await self._settle_abandoned()
            user, opts = self._user_message(content, images, options)
            queue: asyncio.Queue[Any] = asyncio.Queue()
            send = self._open_send(opts)
            return queue, asyncio.create_task(self._converse(send, queue, user=user))

        return TokenStream(begin, self.stop, self._abandon)

    def _abandon(self, runner: asyncio.Task[Any]) -> None:
        """A tokens() reader left before the end: stop its turn; the next one waits for it."""
        self._abandoned_turn = runner
        self.stop()
        runner.add_done_callback(lambda task: None if task.cancelled() else task.exception())

    async def _settle_abandoned(self) -> None:
        """Wait for a turn stopped by an abandoned tokens() reader (it ends promptly)."""
        runner, self._abandoned_turn = self._abandoned_turn, None
        current = asyncio.get_running_loop()
        if runner is not None and not runner.done() and runner.get_loop() is current:
            await asyncio.wait((runner,))

    def send_sync(
        self,
        content: str,
        *,
        images: Sequence[Image] | None = None,
        options: Mapping[str, Any] | None = None,
        display: bool | None = None,
    ) -> Message:
        """Blocking `send`, for scripts; also safe inside a running loop (Jupyter).

        It uses its own short-lived connection (an AsyncClient cannot cross event loops).
        Ctrl-C stops the stream, keeps the partial reply and re-raises KeyboardInterrupt.

        ```py
        reply = chat.send_sync("Hi")
        ```
        """

        async def once() -> Message:
            try:
                return await self._send_user(content, images, options, display, own_pool=True)
            finally:
                await self._clients.release()  # this call's loop only: not the caller's pool

        return run_sync(once, on_interrupt=self.stop)

    def display(self, enabled: bool = True) -> None:
        """Show every later reply live in Jupyter (Markdown updated in place, reasoning folded,
        tool calls, a footer with usage and time to first token); ``display(False)`` stops.
        Outside a notebook it changes nothing, and IPython is never imported."""
        self._display = bool(enabled)

    def _show(self, display: bool | None) -> _notebook.LiveDisplay | None:
        if not (self._display if display is None else display):
            return None
        return _notebook.live(self)

    def _repr_markdown_(self) -> str:
        """The transcript, for Jupyter."""
        return _notebook.chat_markdown(self)

    def _repr_html_(self) -> str:
        return _notebook.chat_html(self)

    async def retry(self) -> Message | None:
        """Drop the last assistant reply (if it is last) and stream a new one.

        After `edit`, this regenerates from the edited message; after tool results, it
        streams the reply to them (and goes on with the tool loop).

        Returns:
            The new assistant Message, or None when there is no user message to answer.
        """
        await self._settle_abandoned()
        self._check_idle()
        if self._messages and self._messages[-1].role == "assistant":
            self._messages.pop()
        if not self._messages or self._messages[-1].role not in ("user", "tool"):
            return None
        return await self._converse(self._open_send(self._options), None)

    async def send_tool_results(
        self, results: Mapping[str, Any], *, options: Mapping[str, Any] | None = None
    ) -> Message:
        """Answer the tool calls of the last reply and stream the next one (the loop goes on).

        Each result (by call id) is a str, a JSON-able value, a `ToolResult` (its `is_error`
        is kept) or an exception (an error result); calls you leave out are run by their
        tools' handlers. Emits ``tool-result`` for each result it sends.

        Raises:
            StreamBusyError: a turn is streaming.
            ValueError: an id that no call waits for, or a call with neither a result nor a
                handler.

        ```py
        reply = await chat.send("Book a table")        # finish_reason "tool_calls"
        reply = await chat.send_tool_results({reply.tool_calls[0].id: {"booked": True}})
        ```
        """
        await self._settle_abandoned()
        self._check_idle()
        if not isinstance(results, Mapping):
            raise TypeError(
                "results must map call ids to results, e.g. "
                f"{{reply.tool_calls[0].id: 'done'}}; got {type(results).__name__}"
            )
        options = self._merge_options(options)
        waiting = self._waiting_calls()
        ids = [c.id for c in waiting]
        unknown = [str(k) for k in results if k not in ids]
        if unknown:
            raise ValueError(
                f"no tool call with id {unknown[0]!r} is waiting for a result; waiting: "
                f"{', '.join(ids) or 'none'}"
            )
        given = {call_id: parse_result(value) for call_id, value in results.items()}
        # Calls of declared tools without a handler need a result; a call of an unknown tool
        # gets an error result the model sees, as in the automatic loop.
        missing = [
            c
            for c in waiting
            if c.id not in given
            and not self._handles(c)
            and (c.name in self._tools or not self._tools)
        ]
        if missing:
            raise ValueError(
                "these calls have neither a result nor a handler: "
                + ", ".join(f"{c.id} ({c.name})" for c in missing)
            )
        if not waiting and (not self._messages or self._messages[-1].role not in ("user", "tool")):
            raise ValueError("no tool calls are waiting for results")
        return await self._converse(self._open_send(options), None, answers=(waiting, given))

    def stop(self) -> None:
        """End the in-flight stream now; the partial reply stays with finish_reason "stopped".

        Ends the whole send: tool handlers running between steps are cancelled (a sync one's
        result is dropped) and no further step starts. Safe to call from any thread. On the
        native protocol it also asks the server to cancel the generation
        (``DELETE <endpoint>/<stream-id>``, best effort).
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        send = self._send
        if send is not None and not send.stop_requested:
            send.stop_requested = True
            handlers = send.handlers
            if handlers is not None:
                if running is send.loop:
                    handlers.cancel()
                elif not send.loop.is_closed():
                    send.loop.call_soon_threadsafe(handlers.cancel)
        turn = self._turn
        if turn is None or turn.stop_requested:
            return
        turn.stop_requested = True
        turn.phase = "stopping"
        if running is turn.loop:
            self._stop_now(turn)
        elif not turn.loop.is_closed():
            turn.loop.call_soon_threadsafe(self._stop_now, turn)

    def reset(self) -> None:
        """Clear history and usage totals (stopping any stream in flight); emits ``reset``."""
        turn = self._turn
        if turn is not None:
            turn.discard = True
            self.stop()
        self._messages.clear()
        self._usage = _NO_USAGE
        self.emit(EVENT_RESET)

    def dump(self) -> dict[str, Any]:
        """The conversation as a JSON-safe dict: ``{"messages": [...], "usage": {...}}``
        (messages as ``Message.model_dump(mode="json")``: image bytes as base64).

        ```py
        saved = json.dumps(chat.dump())
        chat.load(json.loads(saved))
        ```
        """
        return dump_history(self._messages, self._usage)

    def load(self, data: Mapping[str, Any] | str) -> None:
        """Replace history and usage totals with what `dump` returned (or its JSON text).

        Raises:
            StreamBusyError: a turn is streaming.
            TypeError, ValueError: `data` is not a dump (what is wrong, and where).
        """
        self._check_idle()
        self._messages, self._usage = load_history(data)

    def edit(self, message_id: str, content: str) -> Message:
        """Rewrite a user message (its id kept) and drop every later message, so that
        `retry()` regenerates from there. Usage totals stay: those tokens were spent.

        Raises:
            StreamBusyError: a turn is streaming.
            ValueError: no message has that id, or it is not a user message.

        ```py
        chat.edit(question.id, "Shorter, please")
        reply = await chat.retry()
        ```
        """
        self._check_idle()
        if not isinstance(content, str):
            raise TypeError(f"content must be a str; got {type(content).__name__}")
        for i, message in enumerate(self._messages):
            if message.id == message_id:
                if message.role != "user":
                    raise ValueError(
                        f"message {message_id!r} is a {message.role} message; edit() rewrites "
                        "user messages (retry() regenerates the assistant's)"
                    )
                edited = message.model_copy(update={"content": content})
                self._messages[i:] = [edited]
                return _copy(edited)
        raise ValueError(f"no message in this conversation has id {message_id!r}")

    def fork(self) -> AIStream:
        """A new AIStream with a copy of this history and usage totals, the same settings
        (endpoint, model, tools, options, retry, headers, client, ...) and no listeners.

        ```py
        branch = chat.fork()
        await branch.send("What if it rains?")     # chat's history is unchanged
        ```
        """
        twin = AIStream(self._endpoint, **self._settings)
        twin._messages = [m.model_copy(deep=True) for m in self._messages]
        twin._usage = self._usage
        return twin

    async def aclose(self) -> None:
        """Stop any turn and let go of the loop's shared pool (the last AIStream to let go
        closes it); a borrowed client= stays open."""
        turn = self._turn
        self.stop()
        if turn is not None and turn.loop is asyncio.get_running_loop():
            await self._finish_cancel_request(turn)  # the DELETE needs the pool: ≤ 2 s
        await self._clients.close()

    async def __aenter__(self) -> AIStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- internals --------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._turn is not None or self._send is not None:
            raise StreamBusyError(
                "a reply is already streaming on this AIStream; await it, or call stop() "
                "first (one AIStream holds one conversation: use another for parallel chats)"
            )

    def _merge_options(self, options: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if options is None:
            return self._options
        if not isinstance(options, Mapping):
            raise TypeError(
                "options must be a dict of request fields such as {'temperature': 0}; "
                f"got {type(options).__name__}"
            )
        return {**self._options, **options}

    def _user_message(
        self,
        content: str,
        images: Sequence[Image] | None,
        options: Mapping[str, Any] | None,
    ) -> tuple[Message, Mapping[str, Any]]:
        """The user message and the send's options, checked before anything changes: a
        request the provider cannot carry is a ValueError here, not after the history grew."""
        if not isinstance(content, str):
            raise TypeError(f"content must be a str; got {type(content).__name__}")
        self._check_idle()
        pictures = list(images or ())
        for image in pictures:
            if not isinstance(image, Image):
                raise TypeError(
                    "images must be Image objects, e.g. images=[Image.from_path('cat.png')] or "
                    f"[Image(url='https://...')]; got {type(image).__name__}"
                )
        user = Message(role="user", content=content, images=pictures)
        options = self._merge_options(options)
        if pictures or options or self._tools:
            request = self._request([*self._messages, user], options)
            self._dialect_factory().build_request(self._endpoint, request)
        return user, options

    def _request(self, messages: list[Message], options: Mapping[str, Any]) -> ChatRequest:
        return ChatRequest(
            messages=wire_messages(messages),
            model=self._model,
            system_prompt=self._system_prompt,
            options=options,
            tools=self._tool_specs,
        )

    def _new_turn(self, queue: asyncio.Queue[Any] | None) -> _Turn:
        if self._turn is not None:
            self._check_idle()
        turn = _Turn(self._usage, self._estimate_prompt(), queue)
        self._turn = turn
        return turn

    def _handles(self, call: ToolCall) -> bool:
        tool = self._tools.get(call.name)
        return tool is not None and tool.handler is not None

    def _waiting_calls(self) -> list[ToolCall]:
        """The calls of the last assistant message that no tool message answers yet."""
        answered: set[str] = set()
        for message in reversed(self._messages):
            if message.role == "tool":
                answered.add(message.tool_call_id or "")
            elif message.role == "assistant":
                return [c for c in message.tool_calls if c.id not in answered]
            else:
                return []
        return []

    def _open_send(self, options: Mapping[str, Any], own_pool: bool = False) -> _Send:
        """Mark this AIStream busy for a whole send (synchronously: stop() finds it at once)."""
        self._check_idle()
        send = self._send = _Send(options, own_pool)
        return send

    async def _converse(
        self,
        send: _Send,
        queue: asyncio.Queue[Any] | None,
        *,
        user: Message | None = None,
        answers: tuple[list[ToolCall], dict[str, tuple[str, bool]]] | None = None,
    ) -> Message:
        """One send: the user message (or the caller's tool results), then model calls with
        tools run between them, until a reply asks for none, a tool has no handler,
        `max_steps` calls were made, or stop()."""
        try:
            if user is not None:
                self._messages.append(user)
                self.emit(EVENT_MESSAGE, _copy(user))
            if answers is not None:
                calls, given = answers
                results = [
                    ToolResult(call_id=c.id, name=c.name, content=text, is_error=error)
                    for c in calls
                    if c.id in given
                    for text, error in (given[c.id],)
                ]
                to_run = [c for c in calls if c.id not in given]
                if to_run:
                    ran = await self._run_tools(send, to_run)
                    if ran is None:
                        return self._stopped_between_steps()
                    results += ran
                order = {c.id: i for i, c in enumerate(calls)}
                self._add_results(sorted(results, key=lambda r: order[r.call_id]))
            steps = 0
            while True:
                if send.stop_requested and (steps or answers is not None):
                    return self._stopped_between_steps()
                turn = self._new_turn(queue)
                turn.stop_requested = send.stop_requested  # stopped before the first step
                reply = await self._run(turn)
                steps += 1
                calls = reply.tool_calls
                if send.stop_requested or reply.finish_reason == "stopped" or not calls:
                    return reply
                if not self._tools or steps >= self._max_steps:
                    return reply
                if any(c.name in self._tools and not self._handles(c) for c in calls):
                    return reply  # a declared tool without a handler: the caller answers
                ran = await self._run_tools(send, calls)
                if ran is None:
                    return self._stopped_between_steps()
                self._add_results(ran)
        finally:
            self._send = None
            if queue is not None:
                queue.put_nowait(END)

    async def _run_tools(self, send: _Send, calls: list[ToolCall]) -> list[ToolResult] | None:
        """Run the calls' handlers (between steps); None when stop() came first."""
        if send.stop_requested:
            return None
        task = asyncio.ensure_future(run_calls(calls, self._tools))
        send.handlers = task
        try:
            await _finished(task)
        except asyncio.CancelledError:  # our caller was cancelled: so are the handlers
            task.cancel()
            await asyncio.wait((task,))
            raise
        finally:
            send.handlers = None
        if send.stop_requested or task.cancelled():
            return None
        return task.result()

    def _add_results(self, results: list[ToolResult]) -> None:
        for result in results:
            message = Message(
                role="tool",
                content=result.content,
                tool_call_id=result.call_id,
                is_error=result.is_error,
            )
            self._messages.append(message)
            self.emit(EVENT_TOOL_RESULT, result)
            self.emit(EVENT_MESSAGE, _copy(message))

    def _stopped_between_steps(self) -> Message:
        """stop() while tools ran: the last assistant message, now finish_reason "stopped"."""
        for i in range(len(self._messages) - 1, -1, -1):
            message = self._messages[i]
            if message.role == "assistant":
                stopped = message.model_copy(update={"finish_reason": "stopped"})
                self._messages[i] = stopped
                return _copy(stopped)
        return Message(role="assistant", content="", finish_reason="stopped")

    def _estimate_prompt(self) -> int:
        """Prompt tokens of the next request: the last reply's own count (in the server's
        units) plus ~4 characters per token for what came after it."""
        chars, known = 0, None
        for message in reversed(self._messages):
            if message.role == "assistant" and message.usage is not None:
                known = message.usage.prompt_tokens + message.usage.completion_tokens
                break
            chars += len(message.content)
        if known is None:
            chars += len(self._system_prompt or "")
        return (known or 0) + _estimate_tokens(chars)

    async def _run(self, turn: _Turn) -> Message:
        """Stream one turn to its end and settle history, usage and events."""
        self.emit(EVENT_STREAMING_START)
        turn.telemetry = _otel.start(
            model=self._model, provider=self._provider, server=self._server
        )
        send = self._send
        request = self._request(self._messages, send.options if send else self._options)
        own_pool = send is not None and send.own_pool
        task = asyncio.create_task(self._attempts(turn, request, own_pool))
        turn.task = task
        try:
            try:
                # Not `await task`: that would hand our caller's cancel to the task, where a
                # stop() could absorb it; and stop() may cancel the task before its first step.
                await _finished(task)
            except asyncio.CancelledError:  # our caller was cancelled: stop the turn, propagate
                turn.stop_requested = True
                turn.phase = "stopping"
                self._stop_now(turn)  # also tells the server to cancel the generation
                await asyncio.wait((task,))
                self._settle(turn, "stopped")
                _end_step(turn, "stopped")
                await self._finish_cancel_request(turn)
                raise
            error = None if task.cancelled() else task.exception()
            if error is None:
                reason = (
                    "length"
                    if turn.cut
                    else "stopped"
                    if turn.stop_requested
                    else (turn.reply.finish_reason or "stop")
                )
                reply = self._settle(turn, reason)
                _end_step(turn, reason)
                await self._finish_cancel_request(turn)
                await self.drain()
                return reply
            turn.phase = "failed"
            _end_step(turn, "error", error)
            if isinstance(error, AIStreamError):
                self._report(error)
                await self.drain()
            raise error
        finally:
            self._turn = None
            self.emit(EVENT_STREAMING_END)

    async def _attempts(self, turn: _Turn, request: ChatRequest, own_pool: bool) -> None:
        """One model call: attempt, and retry while `_retry.decide` says so.

        Each attempt gets a fresh dialect; `state` carries the resume point between them. The
        decision is `decide`'s; this loop carries it out: the restart, the ``retry`` event,
        the log line and the sleep. A stop() cancels the task: that ends the call quietly.
        """
        if turn.stop_requested:
            return  # stop() (or aclose()) came before the first attempt: send nothing
        budget = RetryBudget(self._retry, self._rng)
        state = AttemptState()
        spec = self._dialect_factory().build_request(self._endpoint, request)
        sink, on_text = self._sinks_for(turn)
        if turn.telemetry is not None:  # only while tracing: the token path is otherwise bare
            sink, on_text = turn.telemetry.watch(sink, on_text)
        try:
            client = turn.client = self._clients.client(own_pool=own_pool)
            while True:
                dialect = self._dialect_factory()
                resumed_from = state.last_event_id
                turn.enter("attempting")
                try:
                    await self._transport.run(client, spec, dialect, sink, state, on_text)
                    return
                except AIStreamError as failure:
                    decision = decide(
                        failure,
                        budget,
                        resumable=dialect.resumable,
                        resumed_from=resumed_from,
                        reached=state.last_event_id,
                        events=state.events,
                    )
                    if isinstance(decision, GiveUp):
                        if decision.cause is None:
                            raise  # the failure itself, as it came
                        raise decision.error from decision.cause
                turn.retries = decision.attempt
                if not decision.resume:
                    state.last_event_id = ""
                    turn.reply = _Reply()  # restart: the next attempt streams it from the start
                turn.enter("backing off")
                if turn.telemetry is not None:
                    turn.telemetry.retry(
                        decision.attempt, decision.delay, decision.resume, decision.error
                    )
                self.emit(
                    EVENT_RETRY,
                    RetryEvent(
                        attempt=decision.attempt,
                        delay=decision.delay,
                        error=decision.error,
                        resume=decision.resume,
                    ),
                )
                log.info(
                    "attempt failed (%s); retry %d in %.3g s%s",
                    decision.error,
                    decision.attempt,
                    decision.delay,
                    " (resuming)" if decision.resume else "",
                )
                await self._sleep(decision.delay)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if turn.stop_requested and task is not None:
                task.uncancel()
                return
            raise

    def _sinks_for(
        self, turn: _Turn
    ) -> tuple[Callable[[Sequence[StreamEvent]], None], Callable[[str], None]]:
        """The per-frame handler and the per-token one (the hot path of every token)."""
        queue = turn.queue
        limit = self._max_reply_chars

        emit_one = self.emit_to

        def on_text(text: str, joined: bool = False) -> None:
            """Deliver one text delta: the reader calls it for each fast-path event (whose text
            never holds a surrogate), `sink` for the rest (`joined` once it went through the
            joiner). One function, not two: it is one Python call per token."""
            if turn.stop_requested:
                return  # stop() was called by a listener of an earlier event in this chunk
            reply = turn.reply
            if reply.text_joiner.pending and not joined:  # half a character came before
                text = reply.text_joiner.feed(text)
            parts = reply.parts
            parts.append(text)
            if len(parts) == _BLOCK:  # one str per delta is ~60 bytes: keep them joined
                block = "".join(parts)
                reply.blocks.append(block)
                parts.clear()
                reply.chars += len(block)
                if limit is not None and reply.chars > limit:
                    self._cut(turn)  # checked per block, not per token: off the token path
            # pyee's {event: {key: listener}}, read (never written) per token: a listener may
            # call remove_all_listeners(), which replaces the dict. Without pyee's lock: under
            # the GIL the snapshot below is atomic (a free-threaded build would need the lock).
            # pyee's `_events` is pinned in tests/test_dependency_contract.py.
            handlers = self._events.get(EVENT_TOKEN)
            if handlers:  # pyee's emit, minus its lock and kwargs: ~2 µs a token
                emit_one(list(handlers.values()), text)
            if queue is not None:
                queue.put_nowait(text)

        def sink(events: Sequence[StreamEvent]) -> None:
            for event in events:
                if turn.stop_requested:
                    return  # stop() was called by a listener of an earlier event
                if type(event) is TextDelta:
                    reply = turn.reply
                    index = event.index
                    if index is not None:
                        if index < reply.next_index:
                            continue  # already delivered before a reconnect
                        reply.next_index = index + 1
                    text = event.text
                    if reply.text_joiner.pending or has_surrogate(text):
                        text = reply.text_joiner.feed(text)
                        if not text:
                            continue  # half a character: it waits for the other half
                        on_text(text, True)
                    else:
                        on_text(text)
                else:
                    self._other_event(turn, event)

        return sink, on_text

    def _other_event(self, turn: _Turn, event: StreamEvent) -> None:
        """Everything but reply text: usage, finish, stream start, reasoning, tool calls, the
        server's own error (raised: it ends the attempt), and what is only logged."""
        reply = turn.reply
        if isinstance(event, UsageReport):
            self._apply_usage(turn, event)
        elif isinstance(event, FinishReason):
            reply.finish_reason = event.reason
        elif isinstance(event, StreamStarted):
            if turn.stream_id and event.stream_id != turn.stream_id and reply.has_text():
                # A reconnect reached a new generation, not ours: its indices would splice.
                turn.reply = _Reply()
                error = ConnectionLostError(
                    f"the server started a new stream {event.stream_id!r} instead of resuming "
                    f"{turn.stream_id!r}; the reply restarts"
                )
                if turn.telemetry is not None:
                    turn.telemetry.retry(turn.retries, 0.0, False, error)
                self.emit(
                    EVENT_RETRY,
                    RetryEvent(attempt=turn.retries, delay=0.0, error=error, resume=False),
                )
            turn.stream_id = event.stream_id
            if turn.telemetry is not None:
                turn.telemetry.response(response_id=event.stream_id, response_model=event.model)
        elif isinstance(event, ReasoningDelta):
            text = event.text
            if reply.reasoning_joiner.pending or has_surrogate(text):
                text = reply.reasoning_joiner.feed(text)
            if text:
                reply.reasoning.append(text)
                reply.chars += len(text)
                self.emit(EVENT_REASONING, text)
                limit = self._max_reply_chars
                if limit is not None and reply.chars > limit:
                    self._cut(turn)
        elif isinstance(event, ToolCallDone):
            call = ToolCall(
                id=event.id, name=event.name, arguments=event.arguments, signature=event.signature
            )
            reply.tool_calls.append(call)
            self.emit(EVENT_TOOL_CALL, call)
        elif isinstance(event, ServerError):
            wait = event.retry_after
            too_long = wait is not None and wait > MAX_SERVER_DELAY  # as for Retry-After
            raise APIStatusError(
                f"the server reported an error in the stream from "
                f"{redact_url(self._endpoint)}: {self._transport.redact(event.message)}"
                + (f" (code {event.code})" if event.code else "")
                + (
                    f" (it asked to retry after {wait:g} s, more than the {MAX_SERVER_DELAY:g} s "
                    "aistream waits; try again later)"
                    if too_long
                    else ""
                ),
                status_code=IN_STREAM_STATUS,
                body=self._transport.redact_body(event.body),
                code=event.code,
                retryable=False if too_long else event.retryable,
                retry_after=None if too_long else wait,
            )
        elif isinstance(event, Skipped):
            log.warning("skipped an event: %s: %.200r", event.reason, event.raw)
        elif isinstance(event, Metadata):
            log.debug("metadata %.200r", event.data)
        elif isinstance(event, Done | Heartbeat):
            pass

    def _apply_usage(self, turn: _Turn, report: UsageReport) -> None:
        reply = turn.reply
        previous = reply.usage or _NO_USAGE
        merged = report.applied_to(
            UsageReport(previous.prompt_tokens, previous.completion_tokens, previous.total_tokens)
        )
        usage = reply.usage = Usage(
            prompt_tokens=merged.prompt_tokens or 0,
            completion_tokens=merged.completion_tokens or 0,
            total_tokens=merged.total_tokens or 0,
        )
        if turn.telemetry is not None:
            turn.telemetry.usage(usage.prompt_tokens, usage.completion_tokens)
        self._usage = turn.base + usage
        self.emit(EVENT_USAGE, self._usage)

    def _settle(self, turn: _Turn, reason: str) -> Message:
        """Record the reply (even a partial or stopped one) and its usage.

        A reply stopped before any content is returned but not added to history.
        """
        turn.phase = "settled"
        reply = turn.reply
        # Half a character still held at the end has no partner: U+FFFD (no token event).
        content = reply.text() + reply.text_joiner.flush()
        if reply.tool_calls and reason == "stop":
            reason = "tool_calls"  # whatever the provider says (Gemini: STOP)
        empty = not (content or reply.tool_calls or reply.reasoning)
        if not turn.discard and not (empty and reason == "stopped") and reply.usage is None:
            reply.usage = Usage(
                prompt_tokens=turn.prompt_estimate,
                completion_tokens=_estimate_tokens(len(content)),
            )
            self._usage = turn.base + reply.usage
            self.emit(EVENT_USAGE, self._usage)
        message = Message(
            role="assistant",
            content=content,
            finish_reason=reason,
            usage=reply.usage,
            reasoning="".join(reply.reasoning) + reply.reasoning_joiner.flush() or None,
            tool_calls=reply.tool_calls,
        )
        if turn.discard:
            return message
        if not (empty and reason == "stopped"):
            self._messages.append(message)
        self.emit(EVENT_MESSAGE, _copy(message))
        return message

    def _report(self, error: AIStreamError) -> None:
        """Emit `error` only when someone listens (pyee would raise otherwise)."""
        if self.listeners(EVENT_ERROR):
            self.emit(EVENT_ERROR, error)

    def _cut(self, turn: _Turn) -> None:
        """End a reply that passed max_reply_chars: as stop() does, settling as "length"."""
        if turn.cut or turn.stop_requested:
            return
        turn.cut = True
        log.warning(
            "a reply passed %s characters (max_reply_chars), so it was cut there and ends with "
            "finish_reason 'length'; pass a larger max_reply_chars (or None) to AIStream if "
            "replies this long are expected",
            f"{self._max_reply_chars:,}",
        )
        self.stop()

    def _stop_now(self, turn: _Turn) -> None:
        """Cancel the turn's task; on the native protocol also send the cancelling DELETE
        (once), so the server stops generating."""
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()
        client = turn.client
        if self._protocol == "native" and turn.stream_id and client and not turn.cancel_request:
            url = f"{self._endpoint.rstrip('/')}/{quote(turn.stream_id, safe='')}"
            turn.cancel_request = asyncio.ensure_future(self._transport.cancel(client, url))
        cancel = getattr(self._dialect_factory, "cancel_request", None)  # a dialect's own cancel
        if cancel is not None and turn.stream_id and client and not turn.cancel_request:
            spec: RequestSpec = cancel(self._endpoint, turn.stream_id)
            turn.cancel_request = asyncio.ensure_future(self._transport.send_cancel(client, spec))

    async def _finish_cancel_request(self, turn: _Turn) -> None:
        if turn.cancel_request is not None:
            await asyncio.wait((turn.cancel_request,), timeout=CANCEL_TIMEOUT)


def _end_step(turn: _Turn, reason: str, error: BaseException | None = None) -> None:
    """Close the model call's span and record its metrics (OpenTelemetry on only)."""
    if turn.telemetry is not None:
        turn.telemetry.end(reason, error)
        turn.telemetry = None


async def _finished(task: asyncio.Future[Any]) -> None:
    """Wait until `task` is done, whatever its outcome; cancelling the waiter leaves `task` be.

    `asyncio.wait((task,))` with one future and one callback instead of its sets and closure:
    ~1 KB less held by every streaming turn, and a few µs less per turn.
    """
    if task.done():
        return
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        task.remove_done_callback(wake)


def _copy(message: Message) -> Message:
    """A copy nobody can use to change our history: Usage and ToolCall are frozen, so only the
    list needs copying (a deep copy costs ~40 µs a turn)."""
    if message.images:
        return message.model_copy(
            update={"tool_calls": list(message.tool_calls), "images": list(message.images)}
        )
    return message.model_copy(update={"tool_calls": list(message.tool_calls)})
