"""Run the built-in demo server in-process, so the examples need no key and no network.

Public API only: `aistream.server.create_app` served by uvicorn on 127.0.0.1 (a free port) in
a background thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from aistream.server import create_app


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve the ASGI `app` on 127.0.0.1 in a background thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        while not server.started:  # a few milliseconds
            if not thread.is_alive():
                raise RuntimeError("the demo server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def endpoint_or_demo(endpoint: str | None = None, **app_options: Any) -> Iterator[str]:
    """Yield `endpoint`, or, when it is None, the chat endpoint of a demo server started here."""
    if endpoint:
        yield endpoint
        return
    rate = os.environ.get("AISTREAM_EXAMPLE_RATE")  # the example tests run them at full speed
    if rate is not None:
        app_options.setdefault("demo_tokens_per_second", float(rate))
    with serve_in_thread(create_app(**app_options)) as base_url:
        yield f"{base_url}/api/chat"
