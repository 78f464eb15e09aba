"""Bytes over the network: the client side's HTTP, and only here (with `_pool`, which it leases).

One call of `Transport.run` is one attempt: it sends the request (with ``Last-Event-ID`` when
resuming), checks status and content type, feeds the body's chunks to a `_wire` StreamReader
(decoder, dialect, per-token fast path and the last delivered id, all sans-I/O): pushed from
the socket's callback by our own connections (`_connection`), or iterated from any other httpx
response (a ``client=`` of the caller's), and enforces
the two timers: `timeout` (silence on the connection, via httpx) and `stall_timeout` (no
content event; heartbeats do not count). It always closes the response. `Transport.cancel` is
the native protocol's best-effort ``DELETE`` that stops a generation on the server, and
`ClientLease` holds the clients one AIStream streams with (its caller's ``client=``, or the
shared pool of each event loop it streamed in).

At import it adds a filter to httpx's logger that redacts secret query values in the URLs
httpx logs at INFO.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httpx

from ._redact import SENSITIVE_HEADERS, redact_bearer, redact_headers, redact_text, redact_url
from ._retry import MAX_SERVER_DELAY, parse_retry_after
from ._wire._dialect import Dialect, RequestSpec, detect_protocol, error_message
from ._wire._events import WireError
from ._wire._reader import Sink, StreamReader, TextSink
from .errors import (
    AIStreamError,
    APIStatusError,
    ConnectionLostError,
    ProtocolError,
    StreamTimeoutError,
)

log = logging.getLogger("aistream")


class _RedactURLs(logging.Filter):
    """Masks secret query parameters in the URLs httpx logs at INFO ("HTTP Request: ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactURLs())

_ERROR_BODY_LIMIT = 64 * 1024
_DRAIN_SECONDS = 0.5
#: How long the cancelling DELETE may take (and how long a closing AIStream waits for it).
CANCEL_TIMEOUT: Final = 2.0


@dataclass(slots=True)
class AttemptState:
    """What survives between attempts of one reply: where to resume and what was delivered."""

    last_event_id: str = ""
    stream_id: str | None = None
    events: int = 0  # content frames delivered by the current attempt


class _StallWatchdog:
    """Cancels `task` when no content arrived for `limit` seconds.

    One loop timer, re-armed lazily from the time of the last content event, so the per-event
    cost is storing the loop's time in `last` rather than a timer reschedule. The loop's clock,
    not time.monotonic: a test loop with virtual time must see the same timeout.
    """

    __slots__ = ("_handle", "_limit", "_loop", "_task", "fired", "last")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], limit: float):
        self._loop, self._task, self._limit = loop, task, limit
        self.fired = False
        self.last = loop.time()
        self._handle = loop.call_at(self.last + limit, self._check)

    def _check(self) -> None:
        due = self.last + self._limit
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        self._task.cancel("aistream stall_timeout")

    def close(self) -> None:
        self._handle.cancel()


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float | None) -> httpx.Timeout:
    return httpx.Timeout(seconds)  # immutable in practice: httpx only reads it


def _names_a_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018  (a property that raises RuntimeError when unset)
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> tuple[httpx.URL, str]:
    """`url` parsed (httpx would re-parse a str on every request) and redacted; shared by every
    Transport, so a thousand conversations with one endpoint hold one parsed URL."""
    return httpx.URL(url), redact_url(url)


def _body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's chunks as the connection delivers them.

    Without Content-Encoding this is `response.stream` itself: `aiter_bytes()` would only add
    an identity decoder, and `aiter_raw()` a generator layer and a re-chunker that does nothing
    without a chunk size, ~0.5 µs per chunk between them. (A response built with its content,
    as httpx.MockTransport makes, is already "consumed" and takes aiter_bytes.)
    """
    stream = response.stream
    if (
        response.headers.get("content-encoding")
        or response.is_stream_consumed
        or not isinstance(stream, httpx.AsyncByteStream)
    ):
        return response.aiter_bytes()
    response.is_stream_consumed = True  # as aiter_raw() marks it; the client closes it after
    return aiter(stream)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a finished body (its last chunk marker, at most briefly), so httpx
    returns the connection to the pool instead of closing it: the next turn skips a connect."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.TransportError):
        pass  # the connection is closed instead; the reply is complete either way


class ClientLease:
    """The HTTP clients one AIStream streams with.

    The caller's ``client=`` (borrowed, never closed), or else the shared pool of each event
    loop it streamed in, leased from `_pool` (imported at first use: httpcore loads anyio,
    which `import aistream` does not need). `send_sync` runs its own loop and asks for that
    loop's pool even when a client was given: an AsyncClient cannot cross event loops.
    """

    __slots__ = ("_borrowed", "_pools")

    #: What ``client=`` must be (AIStream checks it at construction).
    client_class: ClassVar[type] = httpx.AsyncClient

    def __init__(self, borrowed: httpx.AsyncClient | None) -> None:
        self._borrowed = borrowed
        self._pools: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def client(self, *, own_pool: bool = False) -> httpx.AsyncClient:
        """The client for the running loop: the borrowed one unless `own_pool`, else the
        loop's shared pool (acquired once per loop)."""
        if self._borrowed is not None and not own_pool:
            return self._borrowed
        loop = asyncio.get_running_loop()
        client = self._pools.get(loop)
        if client is None:
            from ._pool import acquire_client

            client = self._pools[loop] = acquire_client()  # the loop's, shared by AIStreams
        return client

    async def release(self) -> None:
        """Let go of the running loop's pool (the last AIStream to do so closes it)."""
        loop = asyncio.get_running_loop()
        client = self._pools.pop(loop, None)
        if client is not None:
            from ._pool import release_client

            await release_client(loop, client)

    async def close(self) -> None:
        """Let go of every pool: the running loop's now, other loops' without closing them."""
        await self.release()
        if self._pools:
            from ._pool import drop_client

            pools, self._pools = self._pools, {}
            for loop, client in pools.items():
                drop_client(loop, client)


class Transport:
    """Runs attempts against one endpoint with fixed headers and timers.

    Args:
        headers: The caller's headers (may hold secrets; never logged unredacted).
        secret_headers: More header names whose values are secrets (joining the built-in).
        timeout: Connect timeout and longest silence on the connection, in seconds (None: none).
        stall_timeout: Longest wait between content events, in seconds (None: disabled).
        max_event_bytes: Largest single event accepted before ProtocolError.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeout: float | None,
        stall_timeout: float | None,
        max_event_bytes: int,
        secret_headers: Iterable[str] = (),
    ) -> None:
        self.headers: dict[str, str] = {}
        for name, value in headers.items():  # names differing only in case: the last one wins
            for same in [k for k in self.headers if k.lower() == name.lower()]:
                del self.headers[same]
            self.headers[name] = value
        # frozenset() and () are shared singletons when empty: nothing held per conversation
        self._overrides = frozenset(k.lower() for k in self.headers)
        extra = frozenset(name.lower() for name in secret_headers)
        self._sensitive = SENSITIVE_HEADERS | extra if extra else SENSITIVE_HEADERS
        secrets = [v for k, v in headers.items() if k.lower() in self._sensitive]
        self._secrets = (*secrets, *(part for value in secrets for part in value.split()[1:]))
        self.timeout = timeout
        self._httpx_timeout = _timeout(timeout)
        self.stall_timeout = stall_timeout
        self.max_event_bytes = max_event_bytes

    def redact(self, text: str) -> str:
        """`text` with every secret header value masked."""
        return redact_bearer(redact_text(text, self._secrets))

    def redact_body(self, body: Any) -> Any:
        """A JSON-like error body with every secret masked (a gateway may echo headers)."""
        if body is None or not self._secrets:
            return body
        try:
            return json.loads(self.redact(json.dumps(body)))
        except (TypeError, ValueError):
            return self.redact(str(body))

    async def run(
        self,
        client: httpx.AsyncClient,
        spec: RequestSpec,
        dialect: Dialect,
        sink: Sink,
        state: AttemptState,
        on_text: TextSink | None = None,
    ) -> None:
        """Stream one attempt to its end marker, or raise an AIStreamError saying why not.

        `sink` gets each frame's events; `on_text` (default: ``sink([TextDelta(text)])``) gets
        the text of each event that the dialect's fast path read straight from the bytes.
        """
        last_event_id = state.last_event_id
        resume_request = getattr(dialect, "resume_request", None)
        if last_event_id and resume_request is not None:
            # The dialect resumes with a request of its own (Responses: GET …?starting_after=)
            spec, last_event_id = resume_request(spec, last_event_id), ""
        target, url = self._url(spec.url)
        headers = self._request_headers(spec, last_event_id)
        state.events = 0
        if log.isEnabledFor(logging.DEBUG):
            shown = {
                k: "[redacted]" if k.lower() in self._sensitive else v for k, v in headers.items()
            }
            log.debug("%s %s headers=%s", spec.method, url, redact_headers(shown))
        watchdog: _StallWatchdog | None = None
        try:
            async with client.stream(
                spec.method,
                target,
                headers=headers,
                content=spec.body,
                timeout=self._httpx_timeout,
            ) as response:
                if response.status_code >= 400:
                    raise await self._status_error(response, url, dialect)
                await self._check_content_type(response, dialect, url)
                if self.stall_timeout is not None:
                    task = asyncio.current_task()
                    assert task is not None
                    watchdog = _StallWatchdog(asyncio.get_running_loop(), task, self.stall_timeout)
                reader = StreamReader(
                    dialect,
                    sink,
                    on_text,
                    max_event_bytes=self.max_event_bytes,
                    last_event_id=state.last_event_id,
                )
                try:
                    await self._read(response, reader, watchdog)
                except httpx.TransportError as exc:
                    if not _names_a_request(exc):  # as aiter_raw() would have done
                        exc.request = response.request
                    raise
                finally:
                    state.events, state.last_event_id = reader.events, reader.last_event_id
        except asyncio.CancelledError:
            if watchdog is not None and watchdog.fired:
                task = asyncio.current_task()
                if task is not None and task.uncancel() == 0:
                    raise StreamTimeoutError(
                        f"no content from {url} for {self.stall_timeout:g} s (stall_timeout) "
                        f"after {state.events} events; the model stalled. Raise stall_timeout "
                        "if long pauses are expected."
                    ) from None
            raise
        except AIStreamError:
            raise
        except WireError as exc:
            raise ProtocolError(f"{exc} (from {url})") from exc
        except httpx.ConnectTimeout as exc:
            raise StreamTimeoutError(
                f"could not connect to {url} within {self.timeout:g} s (timeout); "
                "check that the server is up and reachable"
            ) from self._scrubbed(exc)
        except httpx.TimeoutException as exc:
            raise StreamTimeoutError(
                f"no data from {url} for {self.timeout:g} s (timeout) after {state.events} "
                "events; raise timeout if the server is slow to answer"
            ) from self._scrubbed(exc)
        except httpx.ConnectError as exc:
            if "Too many open files" in str(exc):  # EMFILE: every stream holds a socket
                raise ConnectionLostError(
                    f"could not connect to {url}: this process has used up its open-file limit "
                    "(each open stream holds a socket); raise it, e.g. `ulimit -n 8192` in the "
                    "shell that starts the process (README: many streams in one process)"
                ) from self._scrubbed(exc)
            raise ConnectionLostError(
                f"could not connect to {url}: {self.redact(str(exc)) or type(exc).__name__}; "
                "check the endpoint URL and that the server is running"
            ) from self._scrubbed(exc)
        except httpx.DecodingError as exc:
            raise ProtocolError(f"could not decode the body from {url}: {exc}") from self._scrubbed(
                exc
            )
        except httpx.TransportError as exc:
            raise ConnectionLostError(
                f"the stream from {url} dropped after {state.events} events "
                f"({type(exc).__name__}: {self.redact(str(exc))})"
            ) from self._scrubbed(exc)
        finally:
            if watchdog is not None:
                watchdog.close()

    def _scrubbed(self, exc: httpx.HTTPError) -> httpx.HTTPError:
        """`exc` (the cause an error chains) with its request replaced by a copy whose secret
        headers and URL query values are masked: error trackers serialise causes' attributes."""
        try:
            request = exc.request
        except RuntimeError:  # an httpx error that names no request
            return exc
        headers = {
            k: "[redacted]" if k.lower() in self._sensitive else v
            for k, v in request.headers.items()
        }
        exc.request = httpx.Request(request.method, redact_url(str(request.url)), headers=headers)
        return exc

    async def cancel(self, client: httpx.AsyncClient, url: str) -> None:
        """``DELETE url`` with our headers, best effort: a failure is logged at DEBUG only (the
        stream is being stopped either way)."""
        try:
            await client.delete(url, headers=self.headers, timeout=CANCEL_TIMEOUT)
        except (httpx.HTTPError, OSError, RuntimeError) as exc:  # RuntimeError: pool closed
            log.debug("best-effort cancel %s failed: %s", redact_url(url), exc)

    async def send_cancel(self, client: httpx.AsyncClient, spec: RequestSpec) -> None:
        """A dialect's own cancel request (Responses: ``POST …/<id>/cancel``) with our
        headers, best effort like `cancel`."""
        headers = {**spec.headers, **self.headers}
        try:
            await client.request(
                spec.method, spec.url, headers=headers, content=spec.body, timeout=CANCEL_TIMEOUT
            )
        except (httpx.HTTPError, OSError, RuntimeError) as exc:  # RuntimeError: pool closed
            log.debug("best-effort cancel %s failed: %s", redact_url(spec.url), exc)

    def _url(self, url: str) -> tuple[httpx.URL, str]:
        return _parsed_url(url)

    def _request_headers(self, spec: RequestSpec, last_event_id: str) -> dict[str, str]:
        """The dialect's headers, then the caller's (a caller's header replaces the dialect's
        of the same name, in any case), then ``Last-Event-ID`` when resuming."""
        overrides = self._overrides
        headers = {k: v for k, v in spec.headers.items() if k.lower() not in overrides}
        headers.update(self.headers)
        if last_event_id:
            for name in [k for k in headers if k.lower() == "last-event-id"]:
                del headers[name]  # a caller's own, in any case: the resume point wins
            headers["Last-Event-ID"] = last_event_id
        return headers

    async def _read(
        self, response: httpx.Response, reader: StreamReader, watchdog: _StallWatchdog | None
    ) -> None:
        """Feed the body to `reader` until its stream finishes; a body that ends first was cut."""
        feed = reader.feed
        now = asyncio.get_running_loop().time
        body = response.extensions.get("aistream_body")  # our pools' (`_connection`)
        if (
            body is not None
            and not response.is_stream_consumed
            and not response.headers.get("content-encoding")
        ):
            response.is_stream_consumed = True  # as aiter_raw() marks it
            now = body.clock

            def take(chunk: bytes) -> bool:
                """One body piece, in the connection's data_received: no task wakes per token."""
                if feed(chunk) and watchdog is not None:
                    watchdog.last = now()
                return reader.finished

            await body.push(take)
            if reader.finished:
                if watchdog is not None:  # (as below)
                    watchdog.close()
                await body.drain(_DRAIN_SECONDS)
                return
        else:
            chunks = _body_chunks(response)
            async for chunk in chunks:
                if feed(chunk) and watchdog is not None:
                    watchdog.last = now()
                if reader.finished:
                    if watchdog is not None:  # the reply is whole: a stall now only delays the
                        watchdog.close()  # drain, and must not fail (and resume) a finished reply
                    await _drain(chunks)
                    return
        reader.eof()
        if not reader.finished:
            raise ConnectionLostError(
                f"the stream from {redact_url(str(response.url))} ended after {reader.events} "
                "events without its end marker; the connection was cut"
            )

    async def _status_error(
        self, response: httpx.Response, url: str, dialect: Dialect | None = None
    ) -> APIStatusError:
        body_bytes = b""
        async for chunk in response.aiter_bytes():
            body_bytes += chunk
            if len(body_bytes) >= _ERROR_BODY_LIMIT:
                break
        text = self.redact(body_bytes[:_ERROR_BODY_LIMIT].decode("utf-8", "replace"))
        body: Any = text
        try:
            body = json.loads(text)
        except ValueError:
            pass
        detail, code = error_message(body) if body else ("(empty body)", None)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail, code = error_message(body["error"])
        status = response.status_code
        message = f"{status} {response.reason_phrase} from {url}: {detail[:500]}"
        retry_after = parse_retry_after(response.headers)
        if retry_after is None:
            # a delay the dialect finds in the body (Gemini: RetryInfo.retryDelay)
            delay_in = getattr(dialect, "retry_delay", None)
            retry_after = delay_in(body) if delay_in is not None else None
        if retry_after is not None and retry_after > MAX_SERVER_DELAY:
            return APIStatusError(
                f"{message} (the server asked to retry after {retry_after:g} s, more than the "
                f"{MAX_SERVER_DELAY:g} s aistream waits; try again later)",
                status_code=status,
                body=body,
                code=code,
                retryable=False,
            )
        return APIStatusError(
            message,
            status_code=status,
            body=body,
            code=code,
            retry_after=retry_after,
            retryable=_retryable_flag(body),
        )

    async def _check_content_type(
        self, response: httpx.Response, dialect: Dialect, url: str
    ) -> None:
        """The content type decides the framing: a mismatch fails at once (never retried).

        An NDJSON body read as SSE has no events and looked like a cut connection; an SSE
        body read as NDJSON is hundreds of malformed lines. Neither is worth a retry.
        """
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype:
            return
        ndjson = "ndjson" in ctype or ctype == "application/jsonl"
        if ctype == "text/event-stream":
            if dialect.framing == "sse":
                return
            use = detect_protocol(url)
            raise ProtocolError(
                f"{url} answered an SSE stream (text/event-stream), but the {dialect.name} "
                f"protocol reads NDJSON lines; pass protocol={use!r} (or the protocol of that "
                "server) instead"
            )
        if ndjson:
            if dialect.framing == "ndjson":
                return
            raise ProtocolError(
                f"{url} answered an NDJSON stream ({ctype}), as an Ollama server does, but the "
                f"{dialect.name} protocol reads SSE; pass protocol='ollama' instead"
            )
        if dialect.framing == "ndjson" and ctype in ("application/json", "text/plain"):
            return
        sample = (await response.aread())[:500].decode("utf-8", "replace")
        raise ProtocolError(
            f"{url} answered {ctype!r} instead of a stream ({dialect.name} protocol expects "
            f"{'text/event-stream' if dialect.framing == 'sse' else 'NDJSON'}): "
            f"{self.redact(sample)!r}; check the endpoint URL and protocol="
        )


def _retryable_flag(body: Any) -> bool | None:
    """Our servers' ``retryable`` (top level, or in OpenAI's ``error`` object), when a bool."""
    if isinstance(body, dict):
        flag = body.get("retryable")
        error = body.get("error")
        if flag is None and isinstance(error, dict):
            flag = error.get("retryable")
        if isinstance(flag, bool):
            return flag
    return None
