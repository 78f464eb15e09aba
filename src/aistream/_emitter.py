"""SafeEmitter: pyee's asyncio emitter with listener failures isolated. Imports pyee only.

A listener that raises is logged and never reaches the stream or the `error` event; coroutine
listeners run as tasks that `drain()` awaits; emitting `error` with no listener is not a crash.
It overrides pyee's protected hooks and reads its `_events`, `_lock` and `_waiting`: each such
name is pinned in tests/test_dependency_contract.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

log = logging.getLogger("aistream")


def _name(f: Callable[..., Any]) -> str:
    return getattr(f, "__qualname__", None) or repr(f)


class SafeEmitter(AsyncIOEventEmitter):
    """An AsyncIOEventEmitter whose listeners cannot break the emitter's caller."""

    def _emit_run(
        self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            result = f(*args, **kwargs)
        except Exception:
            log.exception("listener %s raised; the stream goes on", _name(f))
            return
        if result is not None:
            self._schedule(f, result)

    def _schedule(self, f: Callable[..., Any], result: Any) -> None:
        """Run a coroutine listener's result as a task that `drain()` waits for."""
        if not inspect.isawaitable(result):
            return  # a plain function that returned something
        try:
            future = asyncio.ensure_future(result)
        except RuntimeError:  # no running loop: a coroutine listener cannot run here
            if inspect.iscoroutine(result):
                result.close()
            log.warning("coroutine listener %s skipped: no event loop is running", _name(f))
            return
        self._waiting.add(future)
        future.add_done_callback(self._listener_done)

    def _call_handlers(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        # pyee's, without building an empty OrderedDict for an event nobody listens to.
        with self._lock:
            handlers = self._events.get(event)
            funcs = list(handlers.values()) if handlers else None
        if not funcs:
            return False
        for f in funcs:
            self._emit_run(f, args, kwargs)
        return True

    def emit_to(self, listeners: list[Callable[..., Any]], arg: Any) -> None:
        """Call `listeners` (a copy of one event's list) with `arg`, as `emit` would: the
        per-token fast path, without pyee's lock, kwargs and a call per listener."""
        for f in listeners:
            try:
                result = f(arg)
            except Exception:
                log.exception("listener %s raised; the stream goes on", _name(f))
                continue
            if result is not None:
                self._schedule(f, result)

    def _listener_done(self, future: asyncio.Future[Any]) -> None:
        self._waiting.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.error("coroutine listener raised; the stream goes on", exc_info=exc)

    def _emit_handle_potential_error(self, event: str, error: Any) -> None:
        # pyee raises an unhandled 'error'; aistream reports failures by raising from send().
        if event != "error":
            super()._emit_handle_potential_error(event, error)

    async def drain(self) -> None:
        """Wait until every coroutine listener started so far has finished."""
        while self._waiting:
            await asyncio.wait(list(self._waiting))
