"""Shared fixtures: a clean environment, loopback servers, a recording sleep, redis-server.

Under CI=true a skipped test is a failure: CI must run every test, so a component missing
there (redis-server, chromium, ...) is a defect of the setup, not a reason to pass.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import pytest

from tests.helpers import RecordingSleep
from tests.loopback import Handler, LoopbackServer
from tests.redisserver import MISSING, RedisServer, redis_binary

_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_fails(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI=true, turn a skip into a failure that says why it was skipped."""
    if not _CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


#: xdist groups (`make test` runs with --dist loadgroup): each group runs on one worker.
#: "redis": the tests that run redis-server and replica processes, one after another, so two
#: of them never share ports and CPU at the same moment (a restart freeing its port while
#: another server starts, say). "chaos", "node": modules whose expensive module-scoped fixture
#: (a whole campaign; node runs of five ai packages) would otherwise run once per worker.
_GROUPS = {
    "tests/replicas/": "redis",
    "tests/chaos/test_replica_campaign.py": "redis",
    "redis": "redis",
    "tests/chaos/test_campaign.py": "chaos",
    "tests/node/": "node",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        group = next((g for part, g in _GROUPS.items() if part in path), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    _skip_fails(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[Any]:
    outcome = yield
    _skip_fails(outcome.get_result())


_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AISTREAM_API_KEY")
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys or proxies."""
    for name in (*_SECRET_ENV, *_PROXY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    """Start a LoopbackServer for a handler; all are closed at teardown."""
    servers: list[LoopbackServer] = []

    async def start(handler: Handler) -> LoopbackServer:
        server = LoopbackServer(handler)
        await server.__aenter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.__aexit__(None, None, None)


@pytest.fixture
def fake_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def threaded_server() -> Iterator[Callable[[Handler], str]]:
    """A LoopbackServer on its own loop in a thread (for blocking callers such as send_sync)."""
    started: list[tuple[asyncio.AbstractEventLoop, LoopbackServer, threading.Thread]] = []

    def start(handler: Handler) -> str:
        loop = asyncio.new_event_loop()
        server = LoopbackServer(handler)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.__aenter__())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(server.__aexit__(None, None, None))
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(5)
        started.append((loop, server, thread))
        return server.url

    yield start
    for loop, _, thread in started:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (no persistence)."""
    if redis_binary() is None:
        pytest.skip(MISSING)
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's redis-server, emptied for this test: its URL."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.restart()  # a test stopped it
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (to stop or restart it mid-test)."""
    if redis_binary() is None:
        pytest.skip(MISSING)
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
