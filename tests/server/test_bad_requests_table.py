"""Bad input to `create_app`: 100+ malformed requests, each a clear 4xx, none touching live streams.

One real uvicorn serves every case (module-scoped). For each case a native stream is started
with `AIStream` and held half-way by the backend; the bad request is sent over a raw socket
(so that even malformed HTTP gets through); then the stream is released and must complete with
exactly the demo's reply, without a retry.

"Clear" means: a 4xx with the status in the table, a JSON object whose ``error`` names the
problem (the table's keyword) and is no stack trace. Requests that are not valid HTTP never reach
the app: uvicorn (h11) answers them with its own ``400 Invalid HTTP request received.`` as plain
text, which the table accepts as such (``app=False``). Cases the server mishandles today are
``xfail(strict=True)`` with the reason; they pass the day the server is fixed, and then fail here
until the mark is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from aistream import AIStream, RetryConfig, RetryEvent
from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import FinishReason, StreamEvent, TextDelta, UsageReport
from aistream.server import DemoModel, create_app
from tests.servers import running

GUARD = 5.0  # seconds: the bound on every wait
HANG = 3.0  # seconds: a bad request not answered by then counts as a hang
MiB = 1 << 20
JSON_TYPE = b"Content-Type: application/json\r\n"
VALID = {"messages": [{"role": "user", "content": "hello"}]}


# --- the server and the stream in flight ----------------------------------------------------------


class GatedDemo:
    """The demo model, except that a reply to "in flight ..." stops half-way until released."""

    def __init__(self) -> None:
        self.demo = DemoModel(tokens_per_second=None)
        self.halfway = asyncio.Event()
        self.gate = asyncio.Event()

    def arm(self) -> None:
        self.halfway, self.gate = asyncio.Event(), asyncio.Event()

    def model_for(self, request: ChatRequest) -> str:
        return "gated"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        tokens = self.demo.tokens(request)
        gated = request.messages[-1].content.startswith("in flight")
        for i, token in enumerate(tokens):
            if gated and i == len(tokens) // 2:
                self.halfway.set()
                await self.gate.wait()
            yield TextDelta(token)
        yield UsageReport(1, len(tokens), 1 + len(tokens))
        yield FinishReason("stop")


class Calls:
    """ASGI middleware counting the app's HTTP calls, so a test can wait for one to end."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.started = self.completed = 0
        self._changed = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.started += 1
        self._changed.set()
        try:
            await self.app(scope, receive, send)
        finally:
            self.completed += 1
            self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()


@dataclass
class Server:
    url: str
    port: int
    backend: GatedDemo
    app: Any
    calls: Calls

    def live_ids(self) -> list[str]:
        return list(self.app.state.aistream.live)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    backend = GatedDemo()
    app = create_app(backend=backend, heartbeat_interval=None)
    calls = Calls(app)
    async with running(calls) as url:
        yield Server(url, int(url.rsplit(":", 1)[1]), backend, app, calls)


# --- a raw HTTP exchange ------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class NotClear(AssertionError):
    """The bad request was not answered with a clear 4xx (what the xfail marks expect)."""


async def exchange(port: int, request: bytes) -> RawResponse:
    """Send `request` as is while reading the response until the server closes the connection.

    Reading while writing matters: a server that refuses a large body answers and closes
    before reading it, and a client that is still writing would lose the answer to the reset.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()

    sending = asyncio.create_task(write())
    raw = b""
    try:
        async with asyncio.timeout(HANG):
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    raw += chunk
    except TimeoutError:
        raise NotClear(f"no complete answer within {HANG} s (a hang); got {raw[:200]!r}") from None
    finally:
        sending.cancel()
        await asyncio.wait((sending,))
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        raise NotClear(f"no HTTP response: {raw[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return RawResponse(int(lines[0].split()[1]), headers, body)


# --- the table ----------------------------------------------------------------------------------

Build = Callable[[bytes], bytes]  # stream id of the stream in flight -> request bytes


def http(
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[str, bytes], ...] = (),
    *,
    length: bool = True,
    raw_headers: bytes = b"",
) -> Build:
    """A request; ``{sid}`` in the path or a header value becomes the live stream's id."""

    def build(sid: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode().replace(b"{sid}", sid), b"Host: test"]
        if length:
            lines.append(b"Content-Length: %d" % len(body))
        lines.append(b"Connection: close")
        lines += [name.encode() + b": " + value.replace(b"{sid}", sid) for name, value in headers]
        return b"\r\n".join(lines) + b"\r\n" + raw_headers + b"\r\n" + body

    return build


def post(body: bytes | Any, *headers: tuple[str, bytes], **options: Any) -> Build:
    """POST /api/chat with `body` (bytes as they are, anything else as JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    type_header = ("Content-Type", b"application/json")
    return http("POST", "/api/chat", data, (type_header, *headers), **options)


def resume(last_event_id: bytes) -> Build:
    """A valid chat POST resuming from `last_event_id`."""
    return post(VALID, ("Last-Event-ID", last_event_id))


def get(path: str, *headers: tuple[str, bytes]) -> Build:
    return http("GET", path, b"", headers, length=False)


def chat(**fields: Any) -> dict[str, Any]:
    """A valid body with `fields` replaced."""
    return {**VALID, **fields}


def message(**fields: Any) -> dict[str, Any]:
    """A body whose only message has `fields` replaced (None: left out)."""
    item = {"role": "user", "content": "hello", **fields}
    return {"messages": [{k: v for k, v in item.items() if v is not None}]}


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    status: int
    keyword: str  # the error message must mention it (case-insensitive)
    app: bool = True  # False: not valid HTTP, answered by uvicorn before the app
    bug: str | None = None  # the server mishandles it today: xfail with this reason


BIG_HEADERS = (
    "uvicorn's h11 refuses a request head this large before the app runs, with a plain-text "
    "'400 Invalid HTTP request received.'; create_app's own 431 covers smaller excesses"
)

CASES: list[Case] = [
    # --- not JSON ---
    Case("json/empty-body", post(b""), 400, "JSON"),
    Case("json/whitespace", post(b"   \n"), 400, "JSON"),
    Case("json/open-brace", post(b"{"), 400, "JSON"),
    Case("json/close-brace", post(b"}"), 400, "JSON"),
    Case("json/truncated", post(b'{"messages": [{"role": "user", "content": "hel'), 400, "JSON"),
    Case("json/bad-array", post(b'{"messages": [}'), 400, "JSON"),
    Case("json/trailing-garbage", post(b'{"messages": []} x'), 400, "JSON"),
    Case("json/two-documents", post(b"{}{}"), 400, "JSON"),
    Case("json/single-quotes", post(b"{'messages': []}"), 400, "JSON"),
    Case("json/unquoted-key", post(b"{messages: []}"), 400, "JSON"),
    Case("json/trailing-comma", post(b'{"messages": [],}'), 400, "JSON"),
    Case("json/comment", post(b'{"messages": [] /* hi */}'), 400, "JSON"),
    Case("json/nul-literal", post(b"nul"), 400, "JSON"),
    Case("json/form-encoded", post(b"messages=hello&stream=true"), 400, "JSON"),
    Case("json/xml", post(b"<messages><m>hi</m></messages>"), 400, "JSON"),
    Case(
        "json/invalid-utf8",
        post(b'{"messages":[{"role":"user","content":"\xff\xfe"}]}'),
        400,
        "JSON",
    ),
    Case(
        "json/overlong-utf8",
        post(b'{"messages":[{"role":"user","content":"\xc0\xaf"}]}'),
        400,
        "JSON",
    ),
    Case(
        "json/raw-control-char",
        post(b'{"messages":[{"role":"user","content":"a\x01b"}]}'),
        400,
        "JSON",
    ),
    Case(
        "json/raw-newline-in-string",
        post(b'{"messages":[{"role":"user","content":"a\nb"}]}'),
        400,
        "JSON",
    ),
    Case("json/bad-escape", post(b'{"messages":[{"role":"user","content":"\\x41"}]}'), 400, "JSON"),
    Case("json/huge-integer", post(b'{"messages": 1' + b"0" * 5000 + b"}"), 400, "JSON"),
    Case(
        "json/gzip-without-decoding",
        post(gzip.compress(json.dumps(VALID).encode()), ("Content-Encoding", b"gzip")),
        400,
        "JSON",
    ),
    Case("json/deep-arrays", post(b"[" * 100_000), 400, "JSON"),
    Case("json/deep-objects", post(b'{"a":' * 100_000), 400, "JSON"),
    Case("json/deep-messages", post(b'{"messages":' + b"[" * 50_000), 400, "JSON"),
    Case(
        "json/lone-surrogate",
        post(b'{"messages":[{"role":"user","content":"\\ud800"}]}'),
        422,
        "content",
    ),
    # --- JSON of the wrong shape ---
    Case("shape/body-array", post([]), 422, "object"),
    Case("shape/body-string", post("hello"), 422, "object"),
    Case("shape/body-number", post(42), 422, "object"),
    Case("shape/body-null", post(None), 422, "object"),
    Case("shape/body-true", post(True), 422, "object"),
    Case("shape/body-nan", post(b"NaN"), 422, "object"),
    Case("shape/empty-object", post({}), 422, "messages"),
    Case("shape/messages-null", post({"messages": None}), 422, "messages"),
    Case("shape/messages-string", post({"messages": "hello"}), 422, "messages"),
    Case("shape/messages-number", post({"messages": 1}), 422, "messages"),
    Case("shape/messages-object", post({"messages": {"role": "user"}}), 422, "messages"),
    Case("shape/messages-true", post({"messages": True}), 422, "messages"),
    Case("shape/messages-nan", post(b'{"messages": NaN}'), 422, "messages"),
    Case("shape/messages-empty", post({"messages": []}), 422, "messages"),
    Case("shape/message-string", post({"messages": ["hello"]}), 422, "messages[0]"),
    Case("shape/message-number", post({"messages": [7]}), 422, "messages[0]"),
    Case("shape/message-null", post({"messages": [None]}), 422, "messages[0]"),
    Case("shape/message-list", post({"messages": [["user", "hello"]]}), 422, "messages[0]"),
    Case("shape/message-true", post({"messages": [True]}), 422, "messages[0]"),
    Case(
        "shape/second-message-bad",
        post({"messages": [VALID["messages"][0], "x"]}),
        422,
        "messages[1]",
    ),
    Case("shape/role-missing", post(message(role=None)), 422, "role"),
    Case("shape/role-null", post({"messages": [{"role": None, "content": "x"}]}), 422, "role"),
    Case("shape/role-unknown", post(message(role="admin")), 422, "role"),
    Case("shape/role-empty", post(message(role="")), 422, "role"),
    Case("shape/role-uppercase", post(message(role="USER")), 422, "role"),
    Case("shape/role-number", post(message(role=1)), 422, "role"),
    Case("shape/role-list", post(message(role=["user"])), 422, "role"),
    Case("shape/role-tool", post(message(role="tool")), 422, "toolCallId"),
    Case("shape/role-with-newline", post(message(role="user\r\n")), 422, "role"),
    Case("shape/content-missing", post(message(content=None)), 422, "content"),
    Case(
        "shape/content-null",
        post({"messages": [{"role": "user", "content": None}]}),
        422,
        "content",
    ),
    Case("shape/content-number", post(message(content=3)), 422, "content"),
    Case(
        "shape/content-parts",
        post(message(content=[{"type": "text", "text": "hi"}])),
        422,
        "content",
    ),
    Case("shape/content-object", post(message(content={"text": "hi"})), 422, "content"),
    Case("shape/content-true", post(message(content=True)), 422, "content"),
    Case("shape/model-number", post(chat(model=4)), 422, "model"),
    Case("shape/model-list", post(chat(model=["gpt"])), 422, "model"),
    Case("shape/model-object", post(chat(model={"name": "gpt"})), 422, "model"),
    Case("shape/model-true", post(chat(model=True)), 422, "model"),
    Case("shape/system-number", post(chat(systemPrompt=1)), 422, "systemPrompt"),
    Case("shape/system-list", post(chat(systemPrompt=["be brief"])), 422, "systemPrompt"),
    Case("shape/system-object", post(chat(systemPrompt={"text": "x"})), 422, "systemPrompt"),
    Case("shape/stream-false", post(chat(stream=False)), 422, "stream"),
    Case("shape/stream-string", post(chat(stream="true")), 422, "stream"),
    Case("shape/stream-one", post(chat(stream=1)), 422, "stream"),
    Case("shape/stream-null", post(chat(stream=None)), 422, "stream"),
    # --- too big ---
    Case("size/body-2mib", post(chat(padding="x" * (2 * MiB))), 413, "larger than"),
    Case("size/content-over-limit", post(message(content="y" * (MiB + 10))), 413, "larger than"),
    Case(
        "size/many-messages",
        post({"messages": [{"role": "user", "content": "hi"}] * 40_000}),
        413,
        "larger than",
    ),
    Case(
        "size/chunked-over-limit",
        http(
            "POST",
            "/api/chat",
            b"100001\r\n" + b"z" * 0x100001 + b"\r\n0\r\n\r\n",
            (("Transfer-Encoding", b"chunked"), ("Content-Type", b"application/json")),
            length=False,
        ),
        413,
        "larger than",
    ),
    Case(
        "size/declared-terabyte",
        http(
            "POST",
            "/api/chat",
            b"{}",
            length=False,
            raw_headers=JSON_TYPE + b"Content-Length: 1000000000000\r\n",
        ),
        413,
        "larger than",
    ),
    Case(
        "size/declared-20-digits",
        http(
            "POST",
            "/api/chat",
            b"{}",
            length=False,
            raw_headers=JSON_TYPE + b"Content-Length: 99999999999999999999\r\n",
        ),
        413,
        "larger than",
    ),
    Case(
        "size/expect-continue",
        http(
            "POST",
            "/api/chat",
            b"",
            length=False,
            raw_headers=JSON_TYPE + b"Expect: 100-continue\r\nContent-Length: 5000000\r\n",
        ),
        413,
        "larger than",
    ),
    Case(
        "size/header-64kib",
        post(VALID, ("X-Padding", b"p" * 65536)),
        431,
        "header",
    ),
    Case(
        "size/500-headers",
        post(VALID, raw_headers=b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(500))),
        431,
        "header",
    ),
    Case(
        "size/header-1mib", post(VALID, ("X-Padding", b"p" * MiB)), 431, "header", bug=BIG_HEADERS
    ),
    Case("size/last-event-id-8kib", resume(b"x" * 8192), 400, "Last-Event-ID"),
    Case("size/last-event-id-8kib-unknown", resume(b"x" * 8192 + b":1"), 404, "unknown"),
    Case("size/stream-id-path-8kib", get("/api/chat/" + "a" * 8192), 404, "unknown"),
    # --- bogus Last-Event-IDs on POST ---
    Case("leid/no-colon", resume(b"abc"), 400, "Last-Event-ID"),
    Case("leid/colon-only", resume(b":"), 400, "Last-Event-ID"),
    Case("leid/no-seq", resume(b"x:"), 400, "Last-Event-ID"),
    Case("leid/no-stream", resume(b":5"), 400, "Last-Event-ID"),
    Case("leid/negative", resume(b"x:-1"), 400, "Last-Event-ID"),
    Case("leid/fraction", resume(b"x:1.5"), 400, "Last-Event-ID"),
    Case("leid/exponent", resume(b"x:1e3"), 400, "Last-Event-ID"),
    Case("leid/hex", resume(b"x:0x10"), 400, "Last-Event-ID"),
    Case("leid/space-in-seq", resume(b"x: 1"), 400, "Last-Event-ID"),
    Case("leid/utf8-digit", resume("x:٣".encode()), 400, "Last-Event-ID"),
    Case("leid/superscript-two", resume(b"x:\xb2"), 400, "Last-Event-ID"),
    Case("leid/superscript-one", resume(b"{sid}:\xb9"), 400, "Last-Event-ID"),
    Case("leid/5000-digits", resume(b"x:" + b"9" * 5000), 400, "Last-Event-ID"),
    Case("leid/unknown-stream", resume(b"unknown:1"), 404, "unknown"),
    Case("leid/stream-id-prefix", resume(b"{sid}x:1"), 404, "unknown"),
    Case("leid/extra-colon", resume(b"{sid}:1:2"), 404, "unknown"),
    Case("leid/percent-encoded-crlf", resume(b"{sid}%0d%0a:1"), 404, "unknown"),
    Case("leid/beyond-live-stream", resume(b"{sid}:99999"), 400, "Last-Event-ID"),
    # --- GET /api/chat/{id} and DELETE with bogus ids ---
    Case("get/unknown", get("/api/chat/unknown"), 404, "unknown"),
    Case(
        "get/unknown-with-id",
        get("/api/chat/unknown", ("Last-Event-ID", b"unknown:1")),
        404,
        "unknown",
    ),
    Case(
        "get/id-of-other-stream",
        get("/api/chat/{sid}", ("Last-Event-ID", b"other:1")),
        400,
        "Last-Event-ID",
    ),
    Case("get/no-colon", get("/api/chat/{sid}", ("Last-Event-ID", b"abc")), 400, "Last-Event-ID"),
    Case(
        "get/seq-not-number",
        get("/api/chat/{sid}", ("Last-Event-ID", b"{sid}:abc")),
        400,
        "Last-Event-ID",
    ),
    Case(
        "get/superscript",
        get("/api/chat/{sid}", ("Last-Event-ID", b"{sid}:\xb2")),
        400,
        "Last-Event-ID",
    ),
    Case(
        "get/beyond-live-stream",
        get("/api/chat/{sid}", ("Last-Event-ID", b"{sid}:99999")),
        400,
        "Last-Event-ID",
    ),
    Case("get/dot-dot", get("/api/chat/%2e%2e"), 404, "unknown"),
    Case("delete/unknown", http("DELETE", "/api/chat/unknown"), 404, "unknown"),
    Case("delete/id-plus-crlf", http("DELETE", "/api/chat/{sid}%0d%0a"), 404, "unknown"),
    Case("delete/id-plus-suffix", http("DELETE", "/api/chat/{sid}x"), 404, "unknown"),
    Case("delete/id-prefix", http("DELETE", "/api/chat/x{sid}"), 404, "unknown"),
    Case("delete/nul", http("DELETE", "/api/chat/{sid}%00"), 404, "unknown"),
    # --- injection: CR, LF and NUL in ids ---
    Case("inject/crlf-in-path", get("/api/chat/{sid}%0d%0aevent:%20done"), 404, "unknown"),
    Case("inject/lf-data-in-path", get("/api/chat/x%0adata:%20%7B%7D%0a%0a"), 404, "unknown"),
    Case("inject/crlf-header-split", resume(b"x:1\r\nX-Injected: yes"), 404, "unknown"),
    Case("inject/bare-lf-in-header", resume(b"a\nb:1"), 400, "Last-Event-ID"),
    Case("inject/obs-fold", resume(b"{sid}:1\r\n :2"), 404, "unknown"),
    Case("inject/bare-cr-in-header", resume(b"a\rb:1"), 400, "invalid http request", app=False),
    Case("inject/nul-in-header", resume(b"{sid}:1\x00"), 400, "invalid http request", app=False),
    Case("inject/ctrl-in-path", get("/api/chat/a\x01b"), 400, "invalid http request", app=False),
    Case("inject/space-in-path", get("/api/chat/a b"), 400, "invalid http request", app=False),
    Case("inject/crlf-in-path-raw", get("/api/chat/a\rb"), 400, "invalid http request", app=False),
    # --- broken HTTP framing ---
    Case(
        "http/two-content-lengths",
        post(VALID, ("Content-Length", b"5")),
        400,
        "invalid http request",
        app=False,
    ),
    Case(
        "http/bad-chunk-size",
        http(
            "POST",
            "/api/chat",
            b"zz\r\nabc\r\n0\r\n\r\n",
            (("Transfer-Encoding", b"chunked"),),
            length=False,
        ),
        400,
        "invalid http request",
        app=False,
    ),
    Case(
        "http/unknown-transfer-coding",
        http(
            "POST",
            "/api/chat",
            b"2\r\n{}\r\n0\r\n\r\n",
            (("Transfer-Encoding", b"gzip, chunked"),),
            length=False,
        ),
        400,
        "invalid http request",
        app=False,
    ),
    Case(
        "http/no-host",
        lambda sid: b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        400,
        "invalid http request",
        app=False,
    ),
    Case(
        "http/short-content-length",
        post(VALID, length=False, raw_headers=b"Content-Length: 10\r\n"),
        400,
        "JSON",
    ),
    # --- methods and paths ---
    Case("route/get-chat", get("/api/chat"), 405, "method"),
    Case(
        "route/put-chat",
        http("PUT", "/api/chat", json.dumps(VALID).encode()),
        405,
        "method",
    ),
    Case("route/patch-chat", http("PATCH", "/api/chat"), 405, "method"),
    Case("route/options-chat", http("OPTIONS", "/api/chat"), 405, "method"),
    Case(
        "route/post-stream-id",
        http("POST", "/api/chat/{sid}", json.dumps(VALID).encode()),
        405,
        "method",
    ),
    Case("route/unknown-path", get("/api/nope"), 404, "not found"),
]


def params() -> list[Any]:
    out = []
    for case in CASES:
        marks = []
        if case.bug:
            marks.append(pytest.mark.xfail(strict=True, reason=case.bug, raises=NotClear))
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_the_table_has_over_100_distinct_cases() -> None:
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


def assert_clear(case: Case, response: RawResponse) -> None:
    """A 4xx with the table's status and a message that names the problem (NotClear if not)."""
    try:
        assert 400 <= response.status < 500, (response.status, response.body[:300])
        assert response.status == case.status, (response.status, response.body[:300])
        text = response.body.decode("utf-8", "replace")
        assert "Traceback" not in text and 'File "' not in text, text
        if not case.app:
            assert case.keyword.lower() in text.lower(), text
            return
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("application/json"), (content_type, text[:300])
        payload = json.loads(response.body)
        assert isinstance(payload, dict), payload
        message, code = payload.get("error"), payload.get("code")
        assert isinstance(message, str) and message and len(message) < 1000, payload
        assert isinstance(code, str) and code, payload
        assert case.keyword.lower() in message.lower(), message
    except AssertionError as exc:
        raise NotClear(f"{case.id}: {exc}") from None


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", params())
async def test_bad_request_gets_a_clear_4xx_and_the_stream_in_flight_completes_exactly(
    server: Server, case: Case
) -> None:
    backend = server.backend
    backend.arm()
    content = f"in flight during {case.id}"
    expected = "".join(backend.demo.tokens(ChatRequest((ChatMessage("user", content),))))
    retries: list[RetryEvent] = []
    outcome: NotClear | None = None
    async with AIStream(
        server.url + "/api/chat",
        protocol="native",
        timeout=GUARD,
        retry=RetryConfig(max_retries=0),
    ) as chat:
        chat.on("retry", retries.append)
        turn = asyncio.create_task(chat.send(content))
        try:
            await asyncio.wait_for(backend.halfway.wait(), GUARD)
            (sid,) = server.live_ids()
            assert_clear(case, await exchange(server.port, case.build(sid.encode())))
        except NotClear as exc:
            outcome = exc
        finally:
            backend.gate.set()
            reply = await asyncio.wait_for(turn, GUARD)
    # The stream in flight first (a plain AssertionError: never covered by an xfail mark) ...
    assert reply.content == expected
    assert reply.finish_reason == "stop"
    assert retries == []
    # ... then the answer to the bad request.
    if outcome is not None:
        raise outcome


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.asyncio(loop_scope="module")
async def test_client_leaving_mid_body_is_not_a_server_error(server: Server) -> None:
    records = _Records()
    uvicorn_errors = logging.getLogger("uvicorn.error")  # does not propagate to caplog's root
    uvicorn_errors.addHandler(records)
    try:
        started, completed = server.calls.started, server.calls.completed
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b'POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"mess')
        await writer.drain()
        # the app has the request and waits for the rest of its body
        await asyncio.wait_for(server.calls.until(lambda: server.calls.started > started), GUARD)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(
            server.calls.until(lambda: server.calls.completed > completed), GUARD
        )
        for _ in range(5):
            await asyncio.sleep(0)  # uvicorn logs right after the app call ends
    finally:
        uvicorn_errors.removeHandler(records)
    assert [r.getMessage() for r in records.records if r.levelno >= logging.ERROR] == []
