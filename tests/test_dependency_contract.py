"""Every private name of pyee, httpx and httpcore that aistream relies on, on one page.

The speed work reads and overrides a few names these libraries do not promise to keep
(benchmarks/README.md says what each one buys). Each is listed here with the place that uses
it, and asserted to exist with the shape that place expects, so a release that moves one fails
here, by name, instead of silently costing speed or correctness. When a test here fails: read
that library's changelog, then adapt the one place the table names.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import httpcore
import httpcore._async.http11
import httpx
import pytest
from pyee.asyncio import AsyncIOEventEmitter

from aistream import _pool
from aistream._emitter import SafeEmitter
from aistream._listeners import TypedEmitter
from aistream._pool import AsyncioBackend, AsyncioTransport, ssl_context

# --- pyee ------------------------------------------------------------------------------------

#: Protected hooks pyee calls and our subclasses override, and where.
PYEE_HOOKS = {
    "_emit_run": (SafeEmitter, "a listener's failure is logged, never raised into the stream"),
    "_call_handlers": (SafeEmitter, "no OrderedDict built for an event nobody listens to"),
    "_emit_handle_potential_error": (SafeEmitter, "an unheard 'error' is not raised"),
    "_add_event_handler": (TypedEmitter, "the warning for an unknown event name"),
}

#: Instance attributes of pyee's emitter that we read, and where.
PYEE_ATTRIBUTES = {
    "_events": "SafeEmitter._call_handlers; AIStream's per-token path (_stream.py, on_text)",
    "_lock": "SafeEmitter._call_handlers",
    "_waiting": "SafeEmitter._schedule and drain(): the tasks of coroutine listeners",
}

#: Names we add to pyee's emitter: a pyee release that defines one would be shadowed silently.
OURS_ON_PYEE = ("_schedule", "_listener_done", "emit_to", "drain")


@pytest.mark.parametrize("name", PYEE_HOOKS)
def test_pyee_still_has_each_hook_we_override_with_its_parameters(name: str) -> None:
    ours, _why = PYEE_HOOKS[name]
    theirs = next((vars(c)[name] for c in AsyncIOEventEmitter.__mro__ if name in vars(c)), None)
    assert theirs is not None, f"pyee no longer has {name} ({ours.__name__} overrides it)"
    mine = vars(ours)[name]
    assert list(inspect.signature(theirs).parameters) == list(inspect.signature(mine).parameters), (
        f"pyee's {name} changed its parameters"
    )


def test_pyee_keeps_listeners_lock_and_tasks_where_we_read_them() -> None:
    emitter = AsyncIOEventEmitter()

    def listener(arg: Any) -> None:
        pass

    emitter.on("token", listener)
    assert set(PYEE_ATTRIBUTES) <= set(vars(emitter)), set(PYEE_ATTRIBUTES) - set(vars(emitter))
    events: Any = emitter._events  # {event: {key: listener}}: what the token path reads
    assert isinstance(events, dict) and list(events["token"].values()) == [listener]
    assert isinstance(emitter._lock, type(threading.Lock()))
    assert isinstance(emitter._waiting, set)


@pytest.mark.parametrize("name", OURS_ON_PYEE)
def test_pyee_has_none_of_the_names_we_add(name: str) -> None:
    assert not hasattr(AsyncIOEventEmitter, name), f"pyee now defines {name}: ours shadows it"


# --- httpx -----------------------------------------------------------------------------------


async def test_httpx_transport_keeps_its_httpcore_pool_in_pool() -> None:
    """AsyncioTransport (_pool.py) swaps `_pool` for one on AsyncioBackend; without it, the
    pool falls back to httpx's own transport (one WARNING: test_pool.py)."""
    transport = httpx.AsyncHTTPTransport()
    assert type(transport._pool) is httpcore.AsyncConnectionPool
    await transport.aclose()


async def test_the_private_levels_test_pool_reads_to_find_the_backend() -> None:
    """tests/test_pool.py's backend_of(): AsyncClient._transport, AsyncConnectionPool
    ._network_backend (tests only)."""
    async with httpx.AsyncClient(transport=AsyncioTransport(ssl_context())) as client:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, AsyncioBackend)


async def test_httpx_response_stream_and_consumed_flag_as_the_transport_uses_them() -> None:
    """_transport._body_chunks iterates `response.stream` itself and marks the response
    consumed (public names, used beyond their documented use)."""

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield b"data: x\n\n"

    response = httpx.Response(200, stream=Body())
    assert isinstance(response.stream, httpx.AsyncByteStream)
    assert response.is_stream_consumed is False
    response.is_stream_consumed = True  # as aiter_raw() marks it
    with pytest.raises(httpx.StreamConsumed):
        [chunk async for chunk in response.aiter_raw()]


def test_httpx_hands_the_transports_response_extensions_on() -> None:
    """_transport finds our connection's body (`_connection.BODY_EXTENSION`) in the httpx
    response's extensions, which httpx's transport copies from httpcore's response
    (tests/test_connection.py streams through it end to end)."""
    source = inspect.getsource(httpx.AsyncHTTPTransport.handle_async_request)
    assert "extensions=resp.extensions" in source


def test_httpx_error_request_raises_until_set() -> None:
    """_transport._names_a_request probes `exc.request` (RuntimeError when unset), and run()
    sets it, as aiter_raw() would have."""
    exc = httpx.ReadError("dropped")
    with pytest.raises(RuntimeError):
        exc.request  # noqa: B018
    request = httpx.Request("GET", "http://127.0.0.1/")
    exc.request = request
    assert exc.request is request


# --- httpcore ---------------------------------------------------------------------------------


def test_httpcore_asks_streams_is_readable_before_reusing_a_connection() -> None:
    """httpcore asks a pooled stream ``get_extra_info("is_readable")`` to drop an idle
    connection the server closed; AsyncioBackend's streams answer it (an undocumented protocol
    between httpcore and its backends)."""
    assert '"is_readable"' in inspect.getsource(httpcore._async.http11)


def test_httpcore_pool_takes_a_network_backend() -> None:
    assert "network_backend" in inspect.signature(httpcore.AsyncConnectionPool).parameters
    assert issubclass(AsyncioBackend, httpcore.AsyncNetworkBackend)


# --- the fallback, said once -------------------------------------------------------------------


def test_a_transport_without_its_pool_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    init = httpx.AsyncHTTPTransport.__init__

    def moved(self: httpx.AsyncHTTPTransport, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)  # a future httpx that keeps its pool under another name
        self.connection_pool = vars(self).pop("_pool")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "__init__", moved)
    monkeypatch.setattr(_pool, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger="aistream"):
        transports = [AsyncioTransport(ssl_context()) for _ in range(2)]
    warnings = [r for r in caplog.records if "AsyncHTTPTransport._pool" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "NoneType" in warnings[0].getMessage()
    for transport in transports:  # httpx's own pool, untouched
        assert not isinstance(vars(transport)["connection_pool"]._network_backend, AsyncioBackend)
