"""A real redis-server for tests: a free loopback port, a temporary dir, no persistence.

`RedisServer` starts the binary, waits for its "Ready to accept connections" log line (no
polling, bounded), and stops it; `restart()` keeps the port, so clients reconnect to the same
URL. Used by the `redis_server` / `redis_url` fixtures in tests/conftest.py and by benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

READY_TIMEOUT = 10.0  # seconds a redis-server may take to say it is ready
MISSING = (
    "redis-server is not installed: `make test` installs it (apt-get install redis-server); "
    "elsewhere install it with your package manager"
)


def redis_binary() -> str | None:
    """The redis-server on PATH, or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (`url`), started with `start()`."""

    def __init__(self, port: int | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError(MISSING)
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aistream-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and return once it accepts connections (RuntimeError if it cannot)."""
        for attempt in range(5):
            try:
                self._start_once()
                return
            except RuntimeError:
                if attempt == 4:
                    raise
                self.port = free_port()  # the port was taken between bind and start

    def _start_once(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--loglevel", "notice",
        ]  # fmt: skip
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        ready = threading.Event()
        lines: list[bytes] = []

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if len(lines) < 200:
                    lines.append(line)
                if b"Ready to accept connections" in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if not ready.wait(READY_TIMEOUT) or process.poll() is not None:
            process.kill()
            process.wait()
            watcher.join(5)
            assert process.stdout is not None
            process.stdout.close()
            raise RuntimeError(
                f"redis-server on port {self.port} did not start: "
                + b"".join(lines[-5:]).decode(errors="replace")
            )
        self.process, self._watcher = process, watcher

    def stop(self) -> None:
        """Stop it now (SIGKILL: what a crash looks like to clients) and wait for it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(5)
            if self._watcher is not None:
                self._watcher.join(5)  # it reads the log to its end
            assert process.stdout is not None
            process.stdout.close()

    def restart(self) -> None:
        """Stop, then start again on the same port (with an empty dataset)."""
        self.stop()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # the kernel may hold the port a moment after the kill
            try:
                self._start_once()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> str:
        """Run one command with redis-cli when it is there (tests' side channel)."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        out = subprocess.run(
            [cli, "-p", str(self.port), *args], capture_output=True, check=True, timeout=10
        )
        return out.stdout.decode().strip()


__all__ = ["MISSING", "RedisServer", "free_port", "redis_binary"]
