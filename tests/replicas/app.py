"""One replica in its own process: ``python -m tests.replicas.app '<json options>'``.

Serves ``create_app(**options)`` with uvicorn on 127.0.0.1 (a free port) and prints
``ready <port>`` once it accepts connections, so the parent waits on a line, not a timer.
``{"continuable": false}`` wraps the demo model so that it cannot continue a reply (its
takeovers end with producer_lost); ``{"chaos_delay": s}`` serves the chaos campaign's model;
``{"graceful_shutdown": s}`` bounds how long a SIGTERM waits for open connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from aistream._wire._dialect import ChatRequest
from aistream._wire._events import StreamEvent
from aistream.server import create_app
from aistream.server._demo import DemoModel


class NotContinuable:
    """The demo model without `continuation`: a stand-in for an upstream that cannot."""

    def __init__(self, demo: DemoModel) -> None:
        self.demo = demo
        self.model = demo.model

    def model_for(self, request: ChatRequest) -> str:
        return self.demo.model_for(request)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self.demo.stream(request)


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"ready {port}", flush=True)


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1])
    chaos_delay = options.pop("chaos_delay", None)
    if chaos_delay is not None:
        from tests.chaos.model import ChaosModel

        options["backend"] = ChaosModel(delay=chaos_delay)
    if not options.pop("continuable", True):
        rate = options.pop("demo_tokens_per_second", 40.0)
        options["backend"] = NotContinuable(DemoModel(tokens_per_second=rate))
    graceful = options.pop("graceful_shutdown", None)  # uvicorn's timeout_graceful_shutdown
    app = create_app(**options)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        loop="asyncio",
        timeout_graceful_shutdown=graceful,
    )
    asyncio.run(_Server(config).serve())


if __name__ == "__main__":
    main()
