"""Replicas in their own processes, and a round-robin loopback proxy in front of them.

`Replica` runs tests/replicas/app.py (create_app with a Redis store) and waits for its
``ready <port>`` line; `kill()` is SIGKILL (a crash, nothing drained), `start()` again gives a
fresh process on a new port. `RoundRobin` is a TCP proxy on 127.0.0.1 that sends each new
connection to the next replica that accepts it, like a load balancer without affinity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

READY_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """One replica process serving ``create_app(**options)``."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Replica:
        path = f"{ROOT / 'src'}{os.pathsep}{ROOT}"  # this checkout's code, not another install's
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.replicas.app", json.dumps(self.options)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        ready = threading.Event()

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("ready ") and not ready.is_set():
                    self.port = int(line.split()[1])
                    ready.set()
                elif len(self.output) < 500:
                    self.output.append(line)
            ready.set()

        self._watcher = threading.Thread(target=watch, daemon=True)
        self._watcher.start()
        if not ready.wait(READY_TIMEOUT) or process.poll() is not None:
            process.kill()
            process.wait()
            raise RuntimeError("replica did not start:\n" + "".join(self.output[-30:]))
        self.process = process
        return self

    def kill(self) -> None:
        """SIGKILL: the replica dies mid-whatever, as in a crash."""
        self.stop(kill=True)

    def stop(self, kill: bool = False) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._watcher.join(5)
        assert process.stdout is not None
        process.stdout.close()


class RoundRobin:
    """A TCP proxy on 127.0.0.1 that spreads connections over `ports()` in turn.

    A replica that refuses a connection (dead) is skipped. `hold_next` lets a test pin the
    next connection's target (to force a resume onto another replica).
    """

    def __init__(self, ports: Callable[[], list[int]]) -> None:
        self._ports = ports
        self.cut: dict[int, int] = {}  # connection index -> response bytes before a cut
        self._accepted = 0
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.targets: list[int] = []  # the port each accepted connection went to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RoundRobin:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index, self._accepted = self._accepted, self._accepted + 1
        try:
            await self._serve(index, reader, writer)
        except asyncio.CancelledError:
            pass  # closing the proxy (asyncio would log a cancelled connection task)
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream = await self._connect()
        if upstream is None:
            return
        up_reader, up_writer = upstream
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer, self.cut.get(index))),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.wait(pumps)
            up_writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        ports = self._ports()
        for _ in range(len(ports)):
            port = ports[self._turn % len(ports)]
            self._turn += 1
            try:
                connection = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.targets.append(port)
            return connection
        return None


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: int | None = None
) -> None:
    """Copy until EOF; with `cut`, stop after that many bytes (the connection then closes)."""
    sent = 0
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            if cut is not None and sent + len(data) >= cut:
                writer.write(data[: cut - sent])
                await writer.drain()
                return
            sent += len(data)
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()
