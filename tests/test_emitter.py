"""SafeEmitter: pyee's API with listener failures isolated (a contract test on pyee internals)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aistream._emitter import SafeEmitter


async def test_once_and_remove_listener_work_as_in_pyee() -> None:
    ee = SafeEmitter()
    got: list[int] = []
    ee.once("x", got.append)
    ee.emit("x", 1)
    ee.emit("x", 2)

    def handler(value: int) -> None:
        got.append(value * 10)

    ee.on("x", handler)
    ee.emit("x", 3)
    ee.remove_listener("x", handler)
    ee.emit("x", 4)
    assert got == [1, 30]


async def test_sync_failure_does_not_skip_later_listeners(caplog: pytest.LogCaptureFixture) -> None:
    ee = SafeEmitter()
    got: list[str] = []
    ee.on("x", lambda v: 1 / 0)
    ee.on("x", got.append)
    with caplog.at_level(logging.ERROR, logger="aistream"):
        ee.emit("x", "ok")
    assert got == ["ok"] and "raised" in caplog.text


async def test_emitting_error_without_listener_does_not_raise() -> None:
    ee = SafeEmitter()
    ee.emit("error", RuntimeError("unhandled"))  # pyee would raise this


async def test_async_listener_failure_is_logged_not_reemitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ee = SafeEmitter()
    errors: list[BaseException] = []
    ee.on("error", errors.append)

    async def bad(value: int) -> None:
        raise ValueError("async bug")

    ee.on("x", bad)
    with caplog.at_level(logging.ERROR, logger="aistream"):
        ee.emit("x", 1)
        await asyncio.wait_for(ee.drain(), 2)
    assert errors == [] and "coroutine listener raised" in caplog.text


def test_coroutine_listener_without_loop_is_skipped_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ee = SafeEmitter()

    async def handler() -> None:
        raise AssertionError("must not run")

    ee.on("reset", handler)
    with caplog.at_level(logging.WARNING, logger="aistream"):
        ee.emit("reset")
    assert "no event loop is running" in caplog.text
