"""A real uvicorn on 127.0.0.1, an OS-chosen port: `running(app)`, for every suite that serves
an app (server, chaos, load, node, otel)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn with a startup event, so callers wait on it instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.asynccontextmanager
async def running(app: Any, *, graceful: float = 5.0, **options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1:0; yield its base URL; shut down on exit.

    `graceful`: seconds open connections get at shutdown. `options` go to `uvicorn.Config`
    (e.g. ``limit_concurrency``, ``backlog``).
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=graceful,
        **options,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait((task, ready), timeout=10, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if not server.started:
        server.should_exit = True
        await task
        raise RuntimeError("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
