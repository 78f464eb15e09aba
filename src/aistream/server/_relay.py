"""Upstream relay: a provider's stream turned into the one event model, by the client's own code.

Imports httpx, `_transport` (one attempt: status mapping, timeouts, decoding) and `_wire`
(dialects). The relay adds no parser of its own: the same `OpenAIDialect`, `AnthropicDialect`
and `OllamaDialect` that `AIStream` uses parse the upstream, and their events (text,
reasoning, tool calls, usage, finish reason, errors) are what the app encodes in whichever
output format the client asked for. Upstream failures become a `ServerError` with a code and
a sensible `retryable`; what a dialect could not read (`Skipped`) is logged, as the client
logs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from .._pool import UNLIMITED, new_client
from .._redact import SENSITIVE_HEADERS, redact_bearer, redact_text, redact_url
from .._transport import AttemptState, Transport
from .._wire._anthropic import AnthropicDialect
from .._wire._dialect import ChatRequest, Dialect, error_message
from .._wire._events import ServerError, Skipped, StreamEvent
from .._wire._gemini import GeminiDialect
from .._wire._ollama import OllamaDialect
from .._wire._openai import OpenAIDialect
from .._wire._registry import auth_headers
from .._wire._responses import ResponsesDialect
from ..errors import (
    AIStreamError,
    APIStatusError,
    ConnectionLostError,
    ProtocolError,
    StreamTimeoutError,
)
from ._options import upstream_options

__all__ = ["UPSTREAM_PROTOCOLS", "UpstreamProtocol", "UpstreamRelay", "upstream_error"]

log = logging.getLogger("aistream.server")


@dataclass(frozen=True, slots=True)
class UpstreamProtocol:
    """How to reach one kind of upstream: its endpoint path and the parser (the key's header is
    `_wire._registry.auth_headers`'s, shared with the client).

    `path` is appended to a base URL unless the URL already ends with it; `base_suffix` is the
    part of `path` a base URL may already carry (``/v1`` of ``/v1/messages``).
    """

    path: str
    dialect: Callable[[], Dialect]
    base_suffix: str = ""

    def endpoint(self, upstream: str) -> str:
        """The full endpoint URL for `upstream`, a base URL or the endpoint itself.

        ```py
        UPSTREAM_PROTOCOLS["anthropic"].endpoint("https://api.anthropic.com")
        # "https://api.anthropic.com/v1/messages" (".../v1" and ".../v1/messages" too)
        ```
        """
        scheme, netloc, path, query, fragment = urlsplit(upstream)
        path = path.rstrip("/")
        if not path.endswith(self.path):
            if self.base_suffix and path.endswith(self.base_suffix):
                path = path[: -len(self.base_suffix)]
            path += self.path
        return urlunsplit((scheme, netloc, path, query, fragment))


#: Upstream kinds the relay speaks, each with the dialect the client uses for it.
UPSTREAM_PROTOCOLS: dict[str, UpstreamProtocol] = {
    "openai": UpstreamProtocol("/chat/completions", OpenAIDialect),
    "anthropic": UpstreamProtocol("/v1/messages", AnthropicDialect, "/v1"),
    "ollama": UpstreamProtocol("/api/chat", OllamaDialect, "/api"),
    "responses": UpstreamProtocol("/responses", ResponsesDialect),
    # the path names the model (…/models/<model>:streamGenerateContent): GeminiDialect adds it
    "gemini": UpstreamProtocol("", GeminiDialect),
}

_END = object()


class UpstreamRelay:
    """Streams replies from an upstream model server as `_wire` events.

    Args:
        upstream: The provider's base URL (``https://api.openai.com/v1``,
            ``https://api.anthropic.com``, ``http://localhost:11434``,
            ``https://generativelanguage.googleapis.com/v1beta``) or its full endpoint URL
            (``…/chat/completions``, ``…/v1/messages``, ``…/api/chat``, ``…/v1/responses``).
        api_key: Sent as the provider expects: ``x-api-key`` for anthropic,
            ``x-goog-api-key`` for gemini, else ``Authorization: Bearer`` (Ollama needs none;
            a proxy in front of it may).
        protocol: A key of `UPSTREAM_PROTOCOLS`: "openai", "anthropic", "ollama",
            "responses" (the OpenAI Responses API) or "gemini" (the model comes from the
            request or `model`).
        model: Model name used when a request names none.
        timeout: Connect timeout and longest silence from the upstream, seconds.
        stall_timeout: Longest wait between content events from the upstream, seconds.
        headers: Extra headers for the upstream.

    Raises:
        ValueError: The protocol is not supported, or `upstream` is not an http(s) URL.

    ```py
    relay = UpstreamRelay("https://api.openai.com/v1", api_key=key, model="gpt-4o-mini")
    async for event in relay.stream(request):   # TextDelta..., FinishReason, UsageReport, Done
        ...
    await relay.aclose()
    ```
    """

    def __init__(
        self,
        upstream: str,
        *,
        api_key: str | None = None,
        protocol: str = "openai",
        model: str | None = None,
        timeout: float | None = 60.0,
        stall_timeout: float | None = 120.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(upstream) if isinstance(upstream, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            shown = redact_url(str(upstream))[:200]
            raise ValueError(
                f"the upstream must be an http:// or https:// URL such as "
                f"'https://api.openai.com/v1'; got {shown!r}"
            )
        try:
            kind = UPSTREAM_PROTOCOLS[protocol]
        except KeyError:
            known = ", ".join(sorted(UPSTREAM_PROTOCOLS))
            raise ValueError(
                f"the relay does not speak protocol {protocol!r}; use one of: {known}"
            ) from None
        self.endpoint = kind.endpoint(upstream)
        self.model = model
        self.protocol = protocol
        self._kind = kind
        merged = {**(headers or {}), **(auth_headers(protocol, api_key) if api_key else {})}
        self._scrub = Scrubber(
            [
                *([api_key] if api_key else []),
                *(v for k, v in merged.items() if k.lower() in SENSITIVE_HEADERS),
                *(v for k, v in parse_qsl(urlsplit(self.endpoint).query) if len(v) >= 8),
            ]
        )
        self._transport = Transport(
            headers=merged, timeout=timeout, stall_timeout=stall_timeout, max_event_bytes=1 << 20
        )
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"UpstreamRelay({redact_url(self.endpoint)!r}, model={self.model!r})"

    def model_for(self, request: ChatRequest) -> str | None:
        """The model name sent upstream (and announced in `start`)."""
        return request.model or self.model

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Relay one reply. Failures end it with a `ServerError` instead of raising."""
        model = request.model or self.model
        options = upstream_options(request.options, self.protocol, bool(request.tools))
        request = dataclasses.replace(request, model=model, options=options)
        dialect = self._kind.dialect()
        try:
            spec = dialect.build_request(self.endpoint, request)
        except ValueError as exc:  # content this upstream cannot carry (an image URL, say)
            log.warning("cannot relay a request: %s", exc)
            yield ServerError(
                f"the upstream ({self.protocol}) cannot take this request: {exc}",
                "unsupported_request",
                False,
            )
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(self._attempt(spec, dialect, queue.put_nowait))
        yielded = False
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, AIStreamError):
                    log.warning("upstream failed: %s", self._scrub(str(item)))
                    yield self._scrub.error(upstream_error(item, before_content=not yielded))
                    return
                yielded = yielded or bool(item)
                for event in item:
                    if type(event) is Skipped:
                        log.warning(
                            "skipped an upstream event: %s: %.200s",
                            self._scrub(event.reason),
                            self._scrub(repr(event.raw)),
                        )
                        continue
                    if isinstance(event, ServerError):
                        if not event.code:
                            event = ServerError(
                                event.message, "upstream_error", event.retryable, event.body
                            )
                        event = self._scrub.error(event)
                    yield event
        finally:
            task.cancel()
            await asyncio.wait((task,))

    async def _attempt(self, spec: Any, dialect: Dialect, put: Callable[[Any], None]) -> None:
        try:
            await self._transport.run(self._http(), spec, dialect, put, AttemptState())
        except AIStreamError as exc:
            put(exc)
        finally:
            put(_END)

    def _http(self) -> httpx.AsyncClient:
        """The pool, made in the running loop on first use (never shared across loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # No connection limit: the app's Limits bound the streams, and a pool limit
            # (httpx's 100) would queue the next relayed reply behind whole replies.
            self._client = new_client(self._transport.timeout, UNLIMITED)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (the app calls this at shutdown)."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()


class Scrubber:
    """Masks the relay's own secrets (its key, secret header and URL query values) in what it
    relays from the upstream: an upstream may echo them in an error.

    Text is masked after any JSON decoding (a key sent back as ``\u0073\u006b…`` escapes
    is decoded by then), and a text cut short that ends in a secret's first characters has
    that tail masked too.
    """

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not self.secrets:
            return redact_bearer(text)
        text = redact_bearer(redact_text(text, self.secrets))
        for secret in self.secrets:  # a tail cut from a secret: `detail[:300]`, `%.200r`
            for size in range(min(len(secret) - 1, len(text)), 3, -1):
                if text.endswith(secret[:size]):
                    text = text[:-size] + "[redacted]"
                    break
        return text

    def value(self, body: Any) -> Any:
        """A JSON-like value with every string masked."""
        if isinstance(body, str):
            return self(body)
        if isinstance(body, dict):
            return {self(str(k)): self.value(v) for k, v in body.items()}
        if isinstance(body, list | tuple):
            return [self.value(v) for v in body]
        return body

    def error(self, event: ServerError) -> ServerError:
        """`event` with its message and body masked (status and Retry-After kept)."""
        event.message = self(event.message)
        event.body = self.value(event.body)
        return event


def upstream_error(error: AIStreamError, *, before_content: bool = False) -> ServerError:
    """The native error for an upstream failure: a code by status or kind, and retryable.

    With `before_content` (nothing was relayed yet) it also carries the HTTP status the app
    answers instead of starting a stream: 502 and not retryable for the
    operator's key and configuration (refused key, unreachable or wrong upstream URL, an
    upstream that does not speak the protocol), the upstream's own 429 / 503 with its
    ``Retry-After``, 400 for a request the upstream refused, 502 / 504 (retryable) for other
    upstream failures.

    ```py
    upstream_error(APIStatusError("...", status_code=429)).code    # "rate_limited"
    ```
    """
    event = _upstream_error(error)
    if before_content:
        event.status = _status_before_content(error)
        if event.status in (429, 503) and isinstance(error, APIStatusError):
            event.retry_after = error.retry_after
    return event


def _status_before_content(error: AIStreamError) -> int:
    """The HTTP status a relay answers for an upstream failure known before any content."""
    if isinstance(error, APIStatusError):
        status = error.status_code
        if status == 429:
            return 429
        if status in (503, 529):
            return 503
        if status in (400, 413, 422):  # the upstream refused this request, not the relay
            return 400
        if status in (408, 504):
            return 504
        return 502
    if isinstance(error, StreamTimeoutError):
        return 504
    return 502


def _upstream_error(error: AIStreamError) -> ServerError:
    if isinstance(error, APIStatusError):
        status = error.status_code
        detail = _detail(error.body)
        message = f"the upstream model server answered HTTP {status}" + (
            f": {detail}" if detail else ""
        )
        if status == 429:
            return ServerError(message, "rate_limited", True, error.body)
        if status in (401, 403):
            # The operator's problem: the log says why; callers learn only that it is not
            # theirs (the upstream's words would tell anyone the key is bad or revoked).
            log.error("%s (check the relay's api_key)", message)
            return ServerError(
                "the relay's upstream model server refused this server's credentials: a "
                "problem of the server's configuration, not of your request",
                "upstream_auth",
                False,
            )
        if status == 404:
            message += " (check the relay's upstream URL and model)"
        if status == 408:
            return ServerError(message, "upstream_timeout", True, error.body)
        if status in (502, 503, 504, 529):
            return ServerError(message, "upstream_unavailable", True, error.body)
        if status >= 500:
            return ServerError(message, "upstream_error", True, error.body)
        return ServerError(message, "upstream_rejected", False, error.body)
    if isinstance(error, StreamTimeoutError):
        return ServerError("the upstream model server stopped sending", "upstream_timeout", True)
    if isinstance(error, ConnectionLostError):
        if isinstance(error.__cause__, httpx.ConnectError):
            return ServerError(
                "the relay could not connect to its upstream model server (check the relay's "
                "upstream URL)",
                "upstream_unreachable",
                False,
            )
        return ServerError(
            "the connection to the upstream model server failed or was cut",
            "upstream_unavailable",
            True,
        )
    if isinstance(error, ProtocolError):
        return ServerError(
            "the upstream model server sent a stream the relay cannot read (check the relay's "
            "upstream URL and protocol)",
            "upstream_protocol_error",
            False,
        )
    return ServerError("the upstream model server failed", "upstream_error", True)


def _detail(body: Any) -> str:
    if not body:
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    message, _ = error_message(body)
    return message[:300]
