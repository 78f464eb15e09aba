"""The ``aistream`` command line: chat, serve and demo. Imports the public API, uvicorn lazily.

Its rooms: this module (the parser, `main`, chat, serve and the embedded server), `_console`
(terminal output) and `_tour` (the scripted ``aistream demo``). Besides the public names of
`aistream` and `aistream.server` it uses a few private pieces: from the wire, `detect_protocol`
(the key variable follows the protocol ``auto`` resolves to) and `auth_headers` (the header
each protocol carries its key in); and the relay's `UPSTREAM_PROTOCOLS`, the choices of
``serve --protocol``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from functools import partial
from typing import Any, TextIO, TypeVar, get_args

import aistream
from aistream import AIStream, AIStreamError, Message, RetryConfig
from aistream._redact import redact_url
from aistream.types import ProtocolName

from ._console import Console, retry_line, show_tools, usage_line
from ._tour import SAMPLE_TOOLS, run_tour
from ._wire._dialect import detect_protocol
from ._wire._registry import auth_headers

__all__ = ["build_parser", "embedded_server", "main"]

_T = TypeVar("_T")

SERVER_EXTRA_HINT = "pip install 'aistream[server]'"
PROTOCOLS: tuple[str, ...] = ("auto", *(p for p in get_args(ProtocolName) if p != "auto"))
_EXTRA_PACKAGES = frozenset({"uvicorn", "starlette", "anyio"})
_START_TIMEOUT = 15.0  # seconds for the embedded server to come up
_STOP_TIMEOUT = 10.0


# --- the server extra and the embedded server ------------------------------------------------


class CommandError(Exception):
    """A failure the command reports as one line on stderr (exit status 1), not a traceback."""


class MissingExtraError(CommandError):
    """The `server` extra (starlette, uvicorn) is not installed."""


def _is_missing_extra(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says starlette, uvicorn or aistream.server is absent."""
    while isinstance(exc, ImportError):
        name = exc.name or ""
        if name == "aistream.server" or name.split(".")[0] in _EXTRA_PACKAGES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _require_server_extra() -> None:
    """Raise MissingExtraError (with the install command) unless aistream.server can load."""
    try:
        import uvicorn  # noqa: F401

        import aistream.server  # noqa: F401
    except ImportError as exc:
        if not _is_missing_extra(exc):
            raise  # a bug, not a missing extra: show it whole
        raise MissingExtraError(
            f"this command needs the server extra ({exc}); install it with: {SERVER_EXTRA_HINT}"
        ) from exc


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), for uvicorn to serve on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections queue from now on, before uvicorn takes the socket
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def embedded_server(**app_options: Any) -> Iterator[str]:
    """Serve ``aistream.server.create_app(**app_options)`` on 127.0.0.1 in a background thread.

    Yields the base URL (``http://127.0.0.1:PORT``, a free port) once the server accepts
    requests; stops it on exit.

    Raises:
        MissingExtraError: starlette or uvicorn is not installed.
        CommandError: the server did not start.
    """
    _require_server_extra()
    import uvicorn

    from aistream.server import create_app

    app = create_app(**app_options)
    sock = _listen("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    def serve() -> None:
        # Ctrl-C belongs to the main thread: one blocked in input() is woken only by a signal
        # delivered to it (POSIX delivers to any thread that does not block it).
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        asyncio.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=serve, name="aistream-embedded-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CommandError("the embedded demo server did not start (see the log above)")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        sock.close()


# --- chat -----------------------------------------------------------------------------------


_KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "responses": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),  # the google-genai SDK reads both
}
#: The model asked for when --model is not given, for APIs that refuse a request without one
#: (a Gemini endpoint names its model in the URL).
_DEFAULT_MODELS = {"responses": "gpt-4.1-mini"}


def _resolved_protocol(protocol: str, endpoint: str | None) -> str:
    """The protocol a request really speaks: ``auto`` is resolved from the endpoint's path."""
    return detect_protocol(endpoint) if protocol == "auto" and endpoint else protocol


def _api_key(given: str | None, protocol: str) -> str | None:
    """--api-key, else $AISTREAM_API_KEY, else the variable of `protocol` (already resolved)."""
    if given:
        return given
    names = ["AISTREAM_API_KEY", *_KEY_VARIABLES.get(protocol, ())]
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _run_turn(chat: AIStream, start: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run one turn on a fresh event loop; Ctrl-C stops the stream and keeps the partial reply."""

    async def turn() -> _T:
        task = asyncio.ensure_future(start())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # asyncio.run turns the first Ctrl-C into this cancel
            chat.stop()
            return await task
        finally:
            await chat.aclose()

    return asyncio.run(turn())


_COMMANDS_HELP = (
    "commands: /help (this list), /retry (a new reply to the last message), /reset (clear "
    "the conversation), /exit (or Ctrl-D); Ctrl-C stops a reply. Start a line with // to send "
    "a message that begins with /."
)
_CHAT_COMMANDS = ("/help", "/retry", "/reset", "/exit", "/quit")


def _chat_loop(chat: AIStream, console: Console, stdin: TextIO, interactive: bool) -> int:
    while True:
        try:
            line = input("> ") if interactive else stdin.readline()
        except EOFError:
            console.line()
            return 0
        except KeyboardInterrupt:  # at the prompt: leave, as a shell does, with 128 + SIGINT
            console.line()
            console.status("[interrupted: exiting]")
            return 130
        if not line:
            return 0  # end of piped input
        text = line.strip()
        if not text:
            continue
        retry = False
        if text.startswith("//"):
            text = text[1:]  # an escaped slash: a message, not a command
        elif text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/exit", "/quit"):
                return 0
            if command == "/help":
                console.status(_COMMANDS_HELP)
                continue
            if command == "/reset":
                chat.reset()
                console.status("[conversation cleared]")
                continue
            retry = command == "/retry"
            if not retry:
                close = difflib.get_close_matches(command, _CHAT_COMMANDS, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                console.error(
                    f"unknown command {command[:40]!r} (not sent); {hint}{_COMMANDS_HELP}"
                )
                continue
        start: Callable[[], Coroutine[Any, Any, Message | None]]
        start = chat.retry if retry else partial(chat.send, text)
        try:
            reply = _run_turn(chat, start)
        except AIStreamError as exc:
            console.error(f"error: {exc}")
            if not interactive:
                return 1
            continue
        except KeyboardInterrupt:  # a second Ctrl-C while the stream was stopping
            console.line()
            return 130
        console.end_line()
        if reply is None:
            console.status("[nothing to retry: send a message first]")
            continue
        if reply.finish_reason == "stopped" and not reply.content:
            console.status("[stopped before any of the reply arrived]")
        elif reply.finish_reason == "stopped":
            console.status("[stopped: the partial reply stays in the conversation]")
        elif reply.finish_reason not in (None, "stop"):
            console.status(f"[finish_reason: {reply.finish_reason}]")
        console.status(usage_line(reply.usage, chat.usage))


def _cmd_chat(args: argparse.Namespace, console: Console) -> int:
    interactive = sys.stdin.isatty()
    tools = args.tools if args.tools is not None else not args.endpoint
    with contextlib.ExitStack() as stack:
        model = args.model
        if args.endpoint:
            endpoint = args.endpoint
            protocol = _resolved_protocol(args.protocol, endpoint)
            key = _api_key(args.api_key, protocol)
            headers = auth_headers(protocol, key) if key else {}
            where = redact_url(endpoint)
            model = model or _DEFAULT_MODELS.get(protocol)
        else:
            endpoint = f"{stack.enter_context(embedded_server())}/api/chat"
            headers = {}
            where = f"the built-in demo model at {endpoint}"
        try:
            chat = AIStream(
                endpoint,
                model=model,
                protocol=args.protocol,
                system_prompt=args.system,
                headers=headers,
                retry=RetryConfig(max_retries=args.retries),
                tools=SAMPLE_TOOLS if tools else None,
            )
        except ValueError as exc:
            console.error(f"error: {exc}")
            return 2
        chat.on("token", console.write)
        chat.on("retry", lambda event: console.status(retry_line(event)))
        show_tools(chat, console)
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
            console.status(
                f"aistream chat with {where}\n"
                "Ctrl-C stops a reply, Ctrl-D exits; /help, /retry, /reset, /exit"
                + ("\ntools: add_numbers, current_time (name one to see a loop)" if tools else "")
            )
        return _chat_loop(chat, console, sys.stdin, interactive)


# --- serve ----------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read_keys(path: str) -> list[str]:
    """The callers' keys in `path`: one a line; blank lines and ``#`` comments skipped."""
    with open(path, encoding="utf-8") as file:
        keys = [line.strip() for line in file]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise ValueError("the file holds no keys (one a line)")
    return keys


def _access_mode(args: argparse.Namespace, keys: int) -> str:
    """Who may call the server, in one line (serve says which mode it is in)."""
    if keys:
        return f"callers need one of the {keys} keys of --api-key-file (Authorization: Bearer)"
    if args.allow_anonymous:
        spends = "spends the upstream key" if args.upstream else "is served"
        return f"ANYONE who can reach this address {spends} (--allow-anonymous, no keys)"
    if args.upstream:
        return (
            "loopback callers only, others get 403 (no --api-key-file: this server spends "
            "the upstream key)"
        )
    return "open, no keys (the demo model spends nothing; --api-key-file to require keys)"


_STREAM_PATH = re.compile(r"(/api/chat/)[^/?\s]+")


def _header_deadline(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol plus a deadline for each request's headers.

    uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits forever for
    a connection that sends nothing, or sends its headers a byte at a time: each would hold
    a socket. Here a connection whose next request's headers are not all in within `seconds`
    of it opening (or of the previous response ending) is closed.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # this request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers are on the clock

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def _mask_stream_ids(record: logging.LogRecord) -> bool:
    """uvicorn's access log without stream ids: an id in a URL is a capability."""
    if isinstance(record.args, tuple) and len(record.args) >= 3:
        args = list(record.args)
        if isinstance(args[2], str):
            args[2] = _STREAM_PATH.sub(r"\1<stream-id>", args[2])
            record.args = tuple(args)
    return True


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    _require_server_extra()
    import uvicorn

    from aistream.server import create_app
    from aistream.server._page import with_chat_page

    options: dict[str, Any] = {"protocol": args.protocol}
    if args.upstream:
        options["upstream"] = args.upstream
        options["api_key"] = _api_key(args.api_key, args.protocol)
    if args.model:
        options["model"] = args.model
    if args.demo_rate is not None:
        options["demo_tokens_per_second"] = args.demo_rate or None
    if args.api_key_file:
        try:
            options["api_keys"] = _read_keys(args.api_key_file)
        except (OSError, ValueError) as exc:
            console.error(f"error: --api-key-file {args.api_key_file}: {exc}")
            return 2
    options["allow_anonymous"] = args.allow_anonymous
    options["allowed_hosts"] = sorted({args.host, "localhost", "127.0.0.1", *args.allowed_host})
    if args.store:
        options["store"] = args.store
        options["producer_lease"] = args.producer_lease
    try:
        app = create_app(**options)
    except ValueError as exc:
        console.error(f"error: {exc}")
        return 2
    if args.store:
        store = app.state.aistream.store
        try:
            store.check_now()  # before listening: an unreachable store is a clear failure
        except Exception as exc:
            console.error(f"error: {exc}; start Redis or fix --store")
            return 1
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        console.error(f"error: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    url = f"http://{_url_host(args.host)}:{sock.getsockname()[1]}"
    model = (
        f"relaying {redact_url(args.upstream)} ({args.protocol})"
        if args.upstream
        else "the built-in demo model (no key, no network)"
    )
    console.line(f"aistream serve: {model}")
    console.line(f"access: {_access_mode(args, len(options.get('api_keys', ())))}")
    console.line(
        f"hosts answered: {', '.join(options['allowed_hosts'])} (add more: --allowed-host)"
    )
    if args.store:
        console.line(f"streams kept in {app.state.aistream.store.address} (shared by replicas)")
    console.line(f"listening on {url}")
    console.line(f"chat page: {url}/  (open it in a browser)")
    console.line(
        f"chat endpoint: POST {url}/api/chat  (try: aistream chat --endpoint {url}/api/chat)"
    )
    protocol = _header_deadline(args.header_timeout)
    server = uvicorn.Server(
        uvicorn.Config(with_chat_page(app), http=protocol, timeout_graceful_shutdown=5)
    )
    logging.getLogger("uvicorn.access").addFilter(_mask_stream_ids)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0 if server.started else 1


# --- demo -----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    demo = Console(console.out, console.out)  # the whole show on stdout, in order
    with embedded_server(demo_tokens_per_second=args.rate or None) as base_url:
        try:
            return asyncio.run(run_tour(base_url, demo))
        except AIStreamError as exc:
            demo.error(f"error: the demo failed: {exc}")
            return 1


# --- arguments ------------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0 picks a free one)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a timeout (more than 0 seconds)")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens per second") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate (0 or more tokens per second)")
    return value


def _upstream_protocols() -> tuple[str, ...] | None:
    """The protocols the relay speaks; None (any, checked later) without the server extra, so
    `serve` can say what to install."""
    try:
        from aistream.server._relay import UPSTREAM_PROTOCOLS
    except ImportError:
        return None
    return tuple(UPSTREAM_PROTOCOLS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aistream`` command."""
    parser = argparse.ArgumentParser(
        prog="aistream",
        description="Stream conversations with language models: chat in the terminal, serve "
        "the streaming endpoint, or watch a demo of retries, resume and stop.",
        epilog="No key needed: 'aistream chat' and 'aistream demo' start the built-in demo "
        "model when no --endpoint is given.",
    )
    parser.add_argument("--version", action="version", version=f"aistream {aistream.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    chat = commands.add_parser(
        "chat",
        help="chat in the terminal (tokens appear live)",
        description="Chat in the terminal; tokens appear as they stream. Without --endpoint "
        "the built-in demo model is started in-process. Reads stdin line by line when it is "
        "not a terminal (echo hi | aistream chat). Ctrl-C stops a reply; Ctrl-D exits.",
    )
    chat.add_argument(
        "--endpoint",
        metavar="URL",
        help="full URL of a streaming chat endpoint (default: start the demo server)",
    )
    chat.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="auto",
        help="wire protocol (default: auto, from the endpoint's path)",
    )
    chat.add_argument("--model", metavar="M", help="model name sent with each request")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument(
        "--api-key",
        metavar="KEY",
        help="key sent to --endpoint (default: $AISTREAM_API_KEY, else $OPENAI_API_KEY, "
        "$ANTHROPIC_API_KEY or $GEMINI_API_KEY / $GOOGLE_API_KEY by the protocol, which auto "
        "resolves from the URL's path)",
    )
    chat.add_argument(
        "--retries",
        type=_count,
        default=3,
        metavar="N",
        help="retries of a failed attempt (default: 3)",
    )
    chat.add_argument(
        "--tools",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give the model two sample tools (add_numbers, current_time) and run them when "
        "it calls them (default: on with the demo model, off with --endpoint)",
    )

    serve = commands.add_parser(
        "serve",
        help="serve POST /api/chat (demo model, or relay an upstream)",
        description="Serve the native streaming endpoint POST /api/chat with uvicorn: the "
        "built-in demo model, or a relay of an upstream model API (see --protocol).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, metavar="N", help="port (default: 8000; 0: any free)"
    )
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="base URL of the model API to relay, e.g. https://api.openai.com/v1 "
        "(default: the demo model)",
    )
    serve.add_argument(
        "--protocol",
        choices=_upstream_protocols(),
        default="openai",
        help="protocol of the upstream (default: openai)",
    )
    serve.add_argument("--model", metavar="M", help="upstream model when requests name none")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help="upstream key (default: $AISTREAM_API_KEY, else $OPENAI_API_KEY, "
        "$ANTHROPIC_API_KEY or $GEMINI_API_KEY / $GOOGLE_API_KEY by protocol; prefer the "
        "variables: other local users see command lines in ps)",
    )
    serve.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="the callers' keys, one a line: each caller sends 'Authorization: Bearer <key>' "
        "(default: none; then a relay serves loopback callers only)",
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve callers from anywhere without a key (a relay spends its upstream key)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may use besides --host, localhost and 127.0.0.1 "
        "(repeatable; guards against DNS rebinding)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="keep streams in Redis so replicas share them, e.g. redis://127.0.0.1:6379/0 "
        "(needs aistream[redis]; default: this process's memory)",
    )
    serve.add_argument(
        "--producer-lease",
        type=float,
        default=5.0,
        metavar="S",
        help="with --store: seconds before another replica takes over the stream of a replica "
        "that died (default: 5)",
    )
    serve.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="close a connection that takes longer than S seconds to send a request's headers, "
        "or sends nothing (default: 10)",
    )
    serve.add_argument(
        "--demo-rate",
        type=_rate,
        metavar="N",
        help="demo model pace in tokens per second (0: as fast as possible)",
    )

    demo = commands.add_parser(
        "demo",
        help="a scripted tour: streaming, usage, a dropped connection that resumes, a stop",
        description="One scripted conversation with the built-in demo model, through a proxy "
        "that drops a connection: shows streaming, usage totals, a resume without a repeated "
        "token, and a stop. Exits 1 if a check fails.",
    )
    demo.add_argument(
        "--rate",
        type=_rate,
        default=200.0,
        metavar="N",
        help="demo model pace in tokens per second (default: 200)",
    )
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "chat": _cmd_chat,
    "serve": _cmd_serve,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aistream`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    console = Console(sys.stdout, sys.stderr)
    try:
        return _COMMANDS[args.command](args, console)
    except CommandError as exc:
        console.error(f"aistream {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:  # outside a reply and the prompt (e.g. between the two)
        console.line()
        console.status("[interrupted: exiting]")
        return 130
    except BrokenPipeError:  # `aistream chat | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
