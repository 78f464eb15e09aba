"""Fixtures for the server tests: a real uvicorn per test (`serve_app`) and a fake clock. The
helpers they build on (and the tests import) are in helpers.py and tests/servers.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.servers import running

from .helpers import GUARD, FakeClock


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """`url = await serve_app(app)`: a real uvicorn for this test, shut down at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(app: Any) -> str:
            return await stack.enter_async_context(running(app, graceful=GUARD))

        yield start


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
