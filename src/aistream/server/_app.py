"""ASGI app: `create_app()` — POST /api/chat, /v1/chat/completions, resume, cancel, health.

Imports starlette, `_response`, `_encoders`, `_formats`, `_completion`, `_generations`,
`_replay`, `_demo`, `_relay` and `_wire`. Every piece of state (replay store, backend, running
generations) belongs to one `ChatService`, made per `create_app()` call and cleaned up by the
app's lifespan; nothing lives in a module global. `ChatService` is the HTTP side: it reads and
checks requests and answers them; the native generations it starts (tasks that outlive their
clients, followers, grace timers, replicas) are `_generations.Generations`'.

A native reply is resumable: its generation writes into the replay store and each response
follows the store, so a client that goes away does not stop it (`resume_grace`); DELETE
cancels it at once. The openai, vercel and responses formats carry no event ids, so nothing can
resume them: their replies stream straight from the backend through their encoder (no replay
store), and a client that goes away cancels its generation at once. `_formats` says which
format a request gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _otel
from .._wire._dialect import ChatRequest
from .._wire._events import StreamEvent
from ._completion import error_response, openai_completion, openai_error
from ._demo import DemoModel
from ._encoders import Format, make_encoder
from ._formats import (
    BadRequest,
    choose_format,
    decode_body,
    parse_chat_request,
    parse_native,
    parse_openai,
    requested_format,
)
from ._generations import ChatBackend, Generations, Sleep, aclose_events
from ._guard import Authenticate, Guard, Principal, key_authenticator, principal_of
from ._guard import error_response as guard_error
from ._limits import (
    Busy,
    Limits,
    RateLimiter,
    Slot,
    Slots,
    bounded_reply,
    request_size_problem,
)
from ._options import InvalidOption
from ._peek import early_failure
from ._policy import Policy, apply_policy
from ._relay import UpstreamRelay
from ._replay import (
    MemoryReplayStore,
    ReplayFull,
    ReplayStore,
    StoreUnavailable,
)
from ._response import (
    EventStreamResponse,
    FrameStreamResponse,
    new_stream_id,
)
from ._responses_out import RequestError, ResponsesEncoder, parse_responses, response_object

__all__ = ["BadRequest", "ChatBackend", "ChatService", "create_app", "parse_chat_request"]

log = logging.getLogger("aistream.server")

#: The trace context of the request being handled (OpenTelemetry on only): a generation's task
#: copies it, so its span is a child of the caller's.
_TRACE_PARENT: contextvars.ContextVar[Any] = contextvars.ContextVar("aistream_trace_parent")
#: Seconds a relayed reply waits for the upstream's first event before its stream starts.
_RELAY_FIRST_EVENT_WAIT: Final = 10.0
_RESPONSES_EXAMPLE: Final = '{"model": "m", "input": "Hello!", "stream": true}'


def _error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    retryable: bool = False,
) -> JSONResponse:
    body = {"error": message, "code": code, "retryable": retryable}
    return JSONResponse(body, status_code=status, headers=headers)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _parse_event_id(value: str) -> tuple[str, int]:
    stream_id, colon, seq = value.rpartition(":")
    if not colon or not stream_id or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        raise BadRequest(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID {value[:100]!r} is not an id this server wrote (<stream-id>:<seq>); "
            "send it exactly as received, or leave it out to start a new reply",
        )
    return stream_id, int(seq)


class ChatService:
    """The state and handlers behind one app: backend, replay store, live generations.

    Args:
        backend: Generates replies (DemoModel, UpstreamRelay, or any ChatBackend).
        store: Keeps each stream's events for replay.
        resume_grace: Seconds a generation runs on with no client before it is cancelled.
        replay_ttl: Shown in error messages (the store enforces it).
        heartbeat_interval, send_timeout: For every event stream response.
        max_body_bytes: Largest request body accepted (413 beyond).
        sleep, clock: Injected time (tests).
        id_factory: Makes stream ids.
        first_event_wait: Seconds a new reply waits for its first event before the response
            starts, so a failure known by then gets an HTTP status (None: do not wait).
        producer_lease: With a shared store: seconds after which another replica takes over
            a stream whose producer stopped renewing its lease.
        limits: Request bounds and generation slots (per principal and in all).
        policy: What callers may choose (model, max_tokens, system prompt, option ranges).
        body_timeout: Seconds a request body may take to arrive (408 beyond; None: no limit).
    """

    def __init__(
        self,
        backend: ChatBackend,
        store: ReplayStore,
        *,
        resume_grace: float = 30.0,
        replay_ttl: float = 300.0,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        max_body_bytes: int = 1 << 20,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        id_factory: Callable[[], str] = new_stream_id,
        first_event_wait: float | None = None,
        producer_lease: float = 5.0,
        limits: Limits | None = None,
        policy: Policy | None = None,
        body_timeout: float | None = 10.0,
    ) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self.policy = policy or Policy()
        self.slots = Slots(self.limits.concurrent_streams, self.limits.max_streams)
        self.body_timeout = body_timeout
        self.first_event_wait = first_event_wait
        self.store = store
        self.generations = Generations(
            backend,
            store,
            stream=self._stream,
            resume_grace=resume_grace,
            producer_lease=producer_lease,
            sleep=sleep,
            id_factory=id_factory,
        )
        self.shared = self.generations.shared
        self.replay_ttl = replay_ttl
        self.max_body_bytes = max_body_bytes
        self._stream_options: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "send_timeout": send_timeout,
            "sleep": sleep,
            "clock": clock,
        }
        self._new_id = id_factory

    @property
    def live(self) -> Mapping[str, object]:
        """The native generations running here, by stream id (`Generations.live`)."""
        return self.generations.live

    # --- routes -----------------------------------------------------------------------------

    async def post_chat(self, request: Request) -> Response:
        """POST /api/chat: a new reply, or with Last-Event-ID a resume of one (native only)."""
        _TRACE_PARENT.set(_otel.extract_context(request.headers))
        try:
            asked = requested_format(request.query_params, request.headers)
            resume = request.headers.get("last-event-id")
            if resume:
                self._check_resumable(asked)
                stream_id, seq = _parse_event_id(resume)
                return await self._resume(stream_id, seq, principal_of(request))
            body = decode_body(await self._read_body(request))
            fmt = choose_format(request.query_params, request.headers, body, "native")
            chat = self._admit(parse_native(body))
        except BadRequest as exc:
            return exc.response()
        options = body.get("stream_options")
        include_usage = not (isinstance(options, dict) and options.get("include_usage") is False)
        return await self._serve(chat, fmt, include_usage, principal_of(request))

    async def post_completions(self, request: Request) -> Response:
        """POST /v1/chat/completions: an OpenAI-compatible endpoint (OpenAI's body and errors).

        Streams OpenAI chunks when the body says ``"stream": true``, else answers one
        ``chat.completion`` object; a format asked for by query or header always streams.
        """
        _TRACE_PARENT.set(_otel.extract_context(request.headers))
        try:
            asked = requested_format(request.query_params, request.headers)
            if request.headers.get("last-event-id"):
                self._check_resumable(asked or "openai")
                stream_id, seq = _parse_event_id(request.headers["last-event-id"])
                return await self._resume(stream_id, seq, principal_of(request))
            chat, options = parse_openai(await self._read_body(request))
            chat = self._admit(chat)
        except BadRequest as exc:
            return exc.openai_response()
        if not options.stream and asked is None:
            try:
                slot = self.slots.acquire(principal_of(request).id)
            except Busy as exc:
                return _busy(exc, openai=True)
            try:
                try:
                    model = self.backend.model_for(chat) or chat.model
                    events = self._stream(chat, model)
                except Exception as exc:
                    log.exception("the backend refused a completion")
                    events = _failing(exc)
                    model = chat.model
                return await openai_completion(events, f"chatcmpl-{self._new_id()}", model)
            finally:
                slot.release()
        return await self._serve(
            chat, asked or "openai", options.include_usage, principal_of(request), True
        )

    async def post_responses(self, request: Request) -> Response:
        """POST /v1/responses: the OpenAI Responses API (its body, stream and errors).

        Streams the Responses events when the body says ``"stream": true``, else answers the
        whole Response object.
        """
        _TRACE_PARENT.set(_otel.extract_context(request.headers))
        try:
            body = decode_body(await self._read_body(request), _RESPONSES_EXAMPLE)
            chat, options = parse_responses(body)
            chat = self._admit(chat)
        except BadRequest as exc:
            return exc.openai_response()
        except RequestError as exc:
            return BadRequest(400, exc.code, str(exc), exc.param).openai_response()
        if options.stream:
            return await self._serve(
                chat, "responses", True, principal_of(request), openai_errors=True
            )
        encoder = ResponsesEncoder(self._new_id())
        try:
            slot = self.slots.acquire(principal_of(request).id)
        except Busy as exc:
            return _busy(exc, openai=True)
        try:
            try:
                encoder.model = self.backend.model_for(chat) or chat.model
                events = self._stream(chat, encoder.model)
            except Exception as exc:
                log.exception("the backend refused a response")
                events = _failing(exc)
            response, failure = await response_object(events, encoder)
        finally:
            slot.release()
        if failure is not None:
            return openai_error(failure.message, failure.code or "error", failure.retryable)
        return JSONResponse(response)

    async def get_models(self, request: Request) -> Response:
        """GET /v1/models: OpenAI's model list, for clients that look before they chat.

        Lists the backend's default model (its ``model`` attribute) when it has one.
        """
        model = getattr(self.backend, "model", None)
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "aistream"}]
        return JSONResponse({"object": "list", "data": data if isinstance(model, str) else []})

    async def get_chat(self, request: Request) -> Response:
        """GET /api/chat/{id}: replay (after Last-Event-ID, else from the start), then follow."""
        stream_id = request.path_params["stream_id"]
        after = -1
        header = request.headers.get("last-event-id")
        try:
            self._check_resumable(requested_format(request.query_params, request.headers))
            if header:
                owner, after = _parse_event_id(header)
                if owner != stream_id:
                    raise BadRequest(
                        400,
                        "invalid_last_event_id",
                        f"Last-Event-ID {header[:100]!r} is not an id of stream {stream_id!r}",
                    )
            return await self._resume(stream_id, after, principal_of(request))
        except BadRequest as exc:
            return exc.response()

    async def get_chat_stream(self, request: Request) -> Response:
        """GET /api/chat/{chat-id}/stream: 204, nothing to resume.

        This is where ``useChat({resume: true})`` asks to resume a UI message stream; that
        format has no ids, so there is never anything to resume, and 204 tells it so.
        """
        return Response(status_code=204)

    def _check_resumable(self, asked: Format | None) -> None:
        if asked is not None and asked != "native":
            raise BadRequest(
                400,
                "resume_unsupported",
                f"the {asked} format has no event ids, so its replies cannot be resumed; "
                "send the conversation again without Last-Event-ID (or use the native format, "
                "which resumes)",
            )

    async def delete_chat(self, request: Request) -> Response:
        """DELETE /api/chat/{id}: cancel the generation now (204), 404 if unknown."""
        stream_id = request.path_params["stream_id"]
        try:
            if not await self._owns(principal_of(request), stream_id):
                return self._unknown(stream_id)
        except StoreUnavailable as exc:
            return _store_down(exc)
        try:
            known = await self.generations.stop(stream_id)
        except StoreUnavailable as exc:
            return _store_down(exc)
        return Response(status_code=204) if known else self._unknown(stream_id)

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: liveness, how many generations run here, and the shared store's state."""
        body: dict[str, Any] = {"status": "ok", "live_streams": len(self.live)}
        if self.shared is not None:
            try:
                await self.shared.check()
            except StoreUnavailable as exc:
                body.update(status="unavailable", store="unavailable", error=str(exc))
                return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
            body["store"] = "ok"
        return JSONResponse(body)

    # --- streams ----------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        """The body, bounded; 415 unless it is JSON (a form post must not start a generation)."""
        content_type = request.headers.get("content-type")
        if not _is_json(content_type or ""):
            shown = "none" if content_type is None else repr(content_type[:100])
            raise BadRequest(
                415,
                "unsupported_media_type",
                f"the body's Content-Type is {shown}; send JSON with "
                "'Content-Type: application/json'",
            )
        limit = self.max_body_bytes
        too_large = BadRequest(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes (max_body_bytes); "
            "send a shorter conversation",
        )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise too_large
        except TimeoutError:
            raise BadRequest(
                408,
                "body_timeout",
                f"the request body did not arrive within {self.body_timeout:g} s "
                "(body_timeout); send it at once",
            ) from None
        except ClientDisconnect:
            raise BadRequest(
                400, "client_disconnected", "the client left before sending its whole body"
            ) from None
        return bytes(body)

    async def _serve(
        self,
        chat: ChatRequest,
        fmt: Format,
        include_usage: bool,
        principal: Principal,
        openai_errors: bool = False,
    ) -> Response:
        """A new reply in `fmt`: native through the replay store, the others straight.

        A failure the backend reports before its first event (a relay whose upstream refused
        the key, or is busy) is answered with its HTTP status instead of a stream, in OpenAI's
        error shape with `openai_errors` (the ``/v1/...`` endpoints), else the native one.
        The reply takes one of the principal's generation slots (`Limits`), given back when
        the generation ends (native) or its response does (the other formats).
        """
        try:
            slot = self.slots.acquire(principal.id)
        except Busy as exc:
            return _busy(exc, openai=openai_errors)
        try:
            response = await self._reply(chat, fmt, include_usage, principal, openai_errors, slot)
        except BaseException:
            slot.release()
            raise
        if fmt == "native" or not isinstance(response, EventStreamResponse):
            return response  # a native generation gives its slot back when it ends
        return _SlotHeld(response, slot)

    async def _reply(
        self,
        chat: ChatRequest,
        fmt: Format,
        include_usage: bool,
        principal: Principal,
        openai_errors: bool,
        slot: Slot,
    ) -> Response:
        events: AsyncIterator[StreamEvent]
        try:
            model = self.backend.model_for(chat) or chat.model
            events = self._stream(chat, model)
        except Exception as exc:
            log.exception("the backend refused a new reply")
            events = _failing(exc)
            model = chat.model
        failure, events = await early_failure(events, self.first_event_wait)
        if failure is not None:
            slot.release()
            log.warning("answered HTTP %s: %s", failure.status, failure.message)
            return error_response(failure, openai=openai_errors)
        if fmt == "native":
            try:
                stream_id = await self.generations.start(chat, events, principal.id, slot)
            except StoreUnavailable as exc:
                slot.release()
                await aclose_events(events)
                return _store_down(exc)
            except ReplayFull as exc:
                slot.release()
                await aclose_events(events)
                log.warning("refusing a new stream: %s", exc)
                if exc.over_share:
                    return _error(
                        429,
                        "replay_quota",
                        f"your streams fill your share of the server's replay space ({exc}); "
                        "wait for one to finish or expire",
                        {"Retry-After": "1"},
                        retryable=True,
                    )
                return _error(
                    503,
                    "server_busy",
                    f"the server is at its limit of resumable streams ({exc}); retry shortly",
                    {"Retry-After": "1"},
                    retryable=True,
                )
            return self._respond(stream_id, -1, attached=True)
        encoder = make_encoder(fmt, self._new_id(), include_usage=include_usage)
        encoder.model = model
        return EventStreamResponse(events, encoder=encoder, **self._stream_options)

    def _admit(self, chat: ChatRequest) -> ChatRequest:
        """`chat` within the Limits' request bounds and as the Policy allows it.

        Raises:
            BadRequest: 413 over a request bound; 400 for an option out of its range.
        """
        chars = len(chat.system_prompt or "") + sum(
            len(m.content) + sum(len(c.arguments or "") for c in m.tool_calls)
            for m in chat.messages
        )
        problem = request_size_problem(self.limits, len(chat.messages), chars)
        if problem is not None:
            raise BadRequest(413, "request_too_large", problem)
        try:
            return apply_policy(self.policy, chat)
        except InvalidOption as exc:
            raise BadRequest(400, "invalid_option", str(exc), exc.name) from None

    def _stream(self, chat: ChatRequest, model: str | None) -> AsyncIterator[StreamEvent]:
        """The backend's events for `chat`; with OpenTelemetry on, recorded as a ``chat`` span
        (a child of the request's trace context) and the GenAI client metrics."""
        events = self.backend.stream(chat)
        if self.limits.max_reply_chars is not None:
            events = bounded_reply(events, self.limits.max_reply_chars)
        if not _otel.available():
            return events
        backend = self.backend
        relay = isinstance(backend, UpstreamRelay)
        provider = (
            _otel.provider_name(backend.protocol)
            if isinstance(backend, UpstreamRelay)
            else "aistream"
        )
        step = _otel.start(
            model=model or chat.model,
            provider=provider,
            parent=_TRACE_PARENT.get(None),
            kind="CLIENT" if relay else "INTERNAL",  # an upstream call, or in-process
        )
        return events if step is None else step.watch_events(events)

    async def _owns(self, principal: Principal, stream_id: str) -> bool:
        """Whether `stream_id` exists and belongs to `principal` (else it is 404 to them)."""
        return await self.store.owner(stream_id) == principal.id

    async def _resume(self, stream_id: str, after: int, principal: Principal) -> Response:
        try:
            if not await self._owns(principal, stream_id):
                return self._unknown(stream_id)
            replay = await self.store.read(stream_id, sys.maxsize)
        except StoreUnavailable as exc:
            return _store_down(exc)
        if replay is None and stream_id not in self.generations.live:
            return self._unknown(stream_id)
        cap, followers = self.limits.max_followers, self.generations.followers(stream_id)
        if cap is not None and followers >= cap:
            return _error(
                429,
                "too_many_followers",
                f"this stream has {followers} clients following it, the most it takes "
                "(max_followers); close one, or retry when one has finished",
                {"Retry-After": "1"},
                retryable=True,
            )
        if replay is not None and after >= replay.next_seq:
            raise BadRequest(
                400,
                "invalid_last_event_id",
                f"Last-Event-ID {stream_id[:100]}:{after} is past the last event of that stream "
                f"(seq {replay.next_seq - 1}); send the id of an event you received",
            )
        return self._respond(stream_id, after)

    def _respond(self, stream_id: str, after: int, attached: bool = False) -> Response:
        frames = self.generations.follow(stream_id, after, attached)
        return FrameStreamResponse(frames, **self._stream_options)

    def _unknown(self, stream_id: str) -> JSONResponse:
        return _error(
            404,
            "unknown_stream",
            f"stream {stream_id[:100]!r} is unknown or has expired (finished streams are kept "
            f"{self.replay_ttl:g} s); send the conversation again without Last-Event-ID to get "
            "a new reply",
        )

    async def aclose(self) -> None:
        """Cancel every running generation and wait for them; close the backend and the store
        (the app's shutdown)."""
        await self.generations.aclose()
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()
        if self.shared is not None:
            await self.shared.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The app's lifespan: reach the shared store (if any); on shutdown, close everything.

        Raises:
            RuntimeError: The shared store cannot be reached (the server does not start).
        """
        if self.shared is not None:
            try:
                await self.shared.start()
            except StoreUnavailable as exc:
                raise RuntimeError(
                    f"cannot start: {exc}; start Redis or fix --store / create_app(store=...)"
                ) from None
        try:
            yield
        finally:
            await self.aclose()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON errors that say what to do."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return _error(
            405,
            "method_not_allowed",
            f"method {request.method} is not allowed on {request.url.path}; use {allowed}",
            exc.headers,
        )
    if exc.status_code == 404:
        return _error(
            404,
            "not_found",
            f"{request.url.path} not found; the chat endpoint is POST /api/chat "
            "(or POST /v1/chat/completions)",
        )
    return _error(exc.status_code, "http_error", str(exc.detail))


_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")


class HeaderLimit:
    """ASGI middleware: requests whose headers exceed `max_bytes` get a 431 JSON error, and
    every response says ``X-Content-Type-Options: nosniff`` (an error that quotes a path or
    a model's text is never read as HTML)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def nosniff(message: Message) -> Awaitable[None]:
            # a plain function handing back send's awaitable: no extra coroutine per frame
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            return send(message)

        size = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if size > self.max_bytes:
            response = _error(
                431,
                "headers_too_large",
                f"the request headers are {size} bytes, more than {self.max_bytes} "
                "(max_header_bytes); send fewer or shorter headers",
            )
            await response(scope, receive, nosniff)
            return
        await self.app(scope, receive, nosniff)


async def _failing(exc: Exception) -> AsyncIterator[StreamEvent]:
    """The events of a backend that raised before its first event: the raise, re-raised."""
    raise exc
    yield  # pragma: no cover - makes this an async generator


def _busy(exc: Busy, openai: bool) -> JSONResponse:
    """A limit's refusal: 429 (the caller's own limit) or 503 (the app's), with Retry-After."""
    log.info("refused a generation: %s", exc.code)
    return guard_error(
        exc.status,
        exc.code,
        exc.message,
        retryable=True,
        headers={"Retry-After": str(exc.retry_after)},
        openai=openai,
    )


class _SlotHeld(Response):
    """A streaming response that gives its generation slot back when it ends, however."""

    def __init__(self, inner: Response, slot: Slot) -> None:
        self._inner, self._slot = inner, slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        finally:
            self._slot.release()


def _store_down(exc: StoreUnavailable) -> JSONResponse:
    """503 while the shared store is unreachable (clients retry after Retry-After)."""
    log.warning("refusing a request: %s", exc)
    return JSONResponse(
        {"error": f"{exc}; retry shortly", "code": "store_unavailable", "retryable": True},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _store_from_url(url: str, **options: Any) -> ReplayStore:
    """A RedisReplayStore for a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    scheme = url.partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"store= takes a Redis URL (redis://host:6379/0, rediss://, unix://) or a "
            f"ReplayStore; got a URL with scheme {scheme!r}"
        )
    try:
        from ._redis import RedisReplayStore
    except ImportError:
        raise ValueError(
            "store='redis://...' needs redis-py: pip install 'aistream[redis]'"
        ) from None
    return RedisReplayStore(url, **options)


def create_app(
    *,
    upstream: str | None = None,
    api_key: str | None = None,
    protocol: str = "openai",
    model: str | None = None,
    heartbeat_interval: float | None = 15.0,
    replay_ttl: float = 300.0,
    resume_grace: float = 30.0,
    demo_tokens_per_second: float | None = 40.0,
    max_body_bytes: int = 1 << 20,
    max_header_bytes: int = 32 << 10,
    replay_max_streams: int = 1000,
    replay_max_bytes: int = 64 << 20,
    send_timeout: float | None = 30.0,
    upstream_timeout: float | None = 60.0,
    backend: ChatBackend | None = None,
    store: str | ReplayStore | None = None,
    producer_lease: float = 5.0,
    replay_store: ReplayStore | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    id_factory: Callable[[], str] = new_stream_id,
    authenticate: Authenticate | None = None,
    api_keys: Iterable[str] | None = None,
    allow_anonymous: bool = False,
    allow_origins: Sequence[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    limits: Limits | None = None,
    policy: Policy | None = None,
    body_timeout: float | None = 10.0,
) -> Starlette:
    """A Starlette app that streams replies in the native protocol and more.

    Routes: ``POST /api/chat`` (a new reply; with ``Last-Event-ID``, a resume),
    ``POST /v1/chat/completions`` (OpenAI-compatible: ``AsyncOpenAI(base_url=<app>/v1)`` works
    unchanged; ``GET /v1/models`` too), ``GET /api/chat/{stream_id}`` (replay then follow),
    ``DELETE /api/chat/{stream_id}`` (cancel now), ``GET /api/chat/{chat_id}/stream`` (204:
    ``useChat``'s resume probe) and ``GET /healthz``.

    Output formats, per request: native (resumable), openai (``chat.completion.chunk``) and
    vercel (the AI SDK UI message stream v1). ``?format=native|openai|vercel`` wins; then the
    ``x-vercel-ai-ui-message-stream`` request header (vercel) or an ``Accept`` parameter
    (``text/event-stream; format=openai``); then a ``useChat`` body (UI messages with
    ``parts``) on ``/api/chat`` means vercel; else the endpoint's own format.

    Args:
        upstream: The upstream model server, None for the built-in demo model: a base URL
            (``https://api.openai.com/v1``, ``https://api.anthropic.com``,
            ``http://localhost:11434``, ``https://generativelanguage.googleapis.com/v1beta``)
            or the full endpoint URL.
        api_key: Sent to the upstream as it expects (``Authorization: Bearer``; ``x-api-key``
            for anthropic; ``x-goog-api-key`` for gemini).
        protocol: The upstream's protocol: "openai" (any OpenAI-compatible server),
            "anthropic", "ollama", "responses" (the OpenAI Responses API) or "gemini".
        model: Model name: sent upstream when a request names none; the demo's name.
        heartbeat_interval: Seconds of silence before a ``: ping`` (None: never).
        replay_ttl: Seconds a finished stream stays resumable.
        resume_grace: Seconds a generation runs on after its client left, awaiting a resume.
        demo_tokens_per_second: The demo's pace (0 or None: as fast as possible).
        max_body_bytes: Largest request body (413 beyond).
        max_header_bytes: Largest total size of the request headers (431 beyond).
        replay_max_streams, replay_max_bytes: Bounds of the in-memory replay store.
        send_timeout: Longest one send to a client may block before its stream is closed.
        upstream_timeout: Connect timeout and longest silence from the upstream.
        backend: Your own reply generator instead of the demo or relay.
        store: Where streams are kept for resume: None for this process's memory, a Redis URL
            (``redis://[:password@]host:6379/0``, needs ``aistream[redis]``) so replicas share
            them, or a ReplayStore.
        producer_lease: With Redis: seconds after which a replica takes over a stream whose
            producer stopped renewing its lease (it died).
        replay_store: Same as `store` with a ReplayStore (the older name).
        sleep, clock, id_factory: Injected time and ids (tests).
        authenticate: Gets each request (Starlette ``Request``), returns its caller's
            ``Principal`` or None (sync or async); None or a raise is a 401. Every route but
            ``/healthz`` calls it, mounted in FastAPI too.
        api_keys: The short form: callers send ``Authorization: Bearer <key>``; each key is
            its own principal (id derived from the key's hash, never the key).
        allow_anonymous: Serve callers from anywhere without authentication. Without it, an
            app with an upstream and no authentication answers loopback callers only (403),
            since it spends the operator's key.
        allow_origins: Origins granted CORS (``["https://app.example.com"]``, or ``["*"]``);
            None: no CORS header is ever granted.
        allowed_hosts: Host names the app answers to (``*.example.com`` patterns; ports are
            not compared); others get 400. None: any host.
        limits: Per-principal and global bounds (`Limits`); None: `Limits()` (request size
            bounds only).
        policy: What callers may choose (`Policy`); `model` fills its model when it has
            none, so a relay's operator model wins unless ``allow_client_model``.
        body_timeout: Seconds a request body may take to arrive (408 beyond; None: none).

    Raises:
        ValueError: An unsupported upstream protocol, an upstream that is not an http(s) URL,
            or bad bounds.

    ```py
    app = create_app()                                                     # demo model
    app = create_app(upstream="https://api.openai.com/v1", api_key=key, model="gpt-4o-mini")
    app = create_app(upstream="https://api.anthropic.com", protocol="anthropic", api_key=key,
                     model="claude-sonnet-4-5")
    app = create_app(upstream="http://localhost:11434", protocol="ollama", model="llama3.2")
    app = create_app(upstream="https://generativelanguage.googleapis.com/v1beta",
                     protocol="gemini", api_key=key, model="gemini-2.5-flash")
    ```
    """
    if backend is None:
        if upstream is not None:
            backend = UpstreamRelay(
                upstream, api_key=api_key, protocol=protocol, model=model, timeout=upstream_timeout
            )
        else:
            backend = DemoModel(
                tokens_per_second=demo_tokens_per_second, model=model or "demo", sleep=sleep
            )
    if authenticate is not None and api_keys is not None:
        raise ValueError("pass authenticate= or api_keys=, not both (api_keys is its short form)")
    if api_keys is not None:
        authenticate = key_authenticator(api_keys)
    limits = limits or Limits()
    policy = policy or Policy()
    if policy.model is None and model is not None:
        policy = dataclasses.replace(policy, model=model)
    if resume_grace < 0 or max_body_bytes < 1:
        raise ValueError("resume_grace must be >= 0 and max_body_bytes >= 1")
    if store is not None and replay_store is not None:
        raise ValueError("pass store= or replay_store= (the older name), not both")
    if producer_lease <= 0:
        raise ValueError(f"producer_lease must be > 0 seconds; got {producer_lease}")
    if isinstance(store, str):
        store = _store_from_url(
            store, ttl=replay_ttl, lease=producer_lease, max_streams=replay_max_streams,
            max_bytes=replay_max_bytes,
        )  # fmt: skip
    store = (
        store
        or replay_store
        or MemoryReplayStore(
            ttl=replay_ttl, max_streams=replay_max_streams, max_bytes=replay_max_bytes, clock=clock
        )
    )
    service = ChatService(
        backend,
        store,
        resume_grace=resume_grace,
        replay_ttl=replay_ttl,
        heartbeat_interval=heartbeat_interval,
        send_timeout=send_timeout,
        max_body_bytes=max_body_bytes,
        sleep=sleep,
        clock=clock,
        id_factory=id_factory,
        producer_lease=producer_lease,
        limits=limits,
        policy=policy,
        body_timeout=body_timeout,
        # A relay learns of a refused key or a busy upstream before its first event: wait
        # for it so it is answered with a status. The demo and your own backend start at once.
        first_event_wait=_RELAY_FIRST_EVENT_WAIT if isinstance(backend, UpstreamRelay) else None,
    )
    routes = [
        Route("/api/chat", service.post_chat, methods=["POST"]),
        Route("/v1/chat/completions", service.post_completions, methods=["POST"]),
        Route("/v1/responses", service.post_responses, methods=["POST"]),
        Route("/v1/models", service.get_models, methods=["GET"]),
        Route("/api/chat/{stream_id}/stream", service.get_chat_stream, methods=["GET"]),
        Route("/api/chat/{stream_id}", service.get_chat, methods=["GET"]),
        Route("/api/chat/{stream_id}", service.delete_chat, methods=["DELETE"]),
        Route("/healthz", service.healthz, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=service.lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[
            Middleware(HeaderLimit, max_bytes=max_header_bytes),
            Middleware(
                Guard,
                authenticate=authenticate,
                local_only=isinstance(backend, UpstreamRelay) and not allow_anonymous,
                allowed_hosts=allowed_hosts,
                allow_origins=allow_origins,
                rate=(
                    None
                    if limits.requests_per_minute is None
                    else RateLimiter(limits.requests_per_minute, clock)
                ),
            ),
        ],
    )
    app.state.aistream = service
    return app
