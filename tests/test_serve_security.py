"""``aistream serve`` as a subprocess: it says who may call it, takes callers' keys from a file,
answers only its own host names, and keeps stream ids out of its access log (review F1, F4, F6).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

GUARD = 10.0
KEY = "caller-key-0123456789"


def aistream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "aistream", *args]


class Served:
    def __init__(self, proc: subprocess.Popen[str], head: list[str], url: str) -> None:
        self.proc, self.head, self.url = proc, head, url
        self.rest = ""

    def stop(self) -> str:
        """SIGINT, then everything it printed after its startup lines."""
        self.proc.send_signal(signal.SIGINT if sys.platform != "win32" else signal.SIGTERM)
        out, err = self.proc.communicate(timeout=GUARD)
        self.rest = out + err
        return self.rest


def serve(*args: str) -> Iterator[Served]:
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(
        aistream_cmd("serve", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            head: list[str] = []
            url = None
            for line in proc.stdout:  # bounded by the process: EOF if it dies
                head.append(line)
                if match := re.match(r"listening on (http://\S+)", line):
                    url = match.group(1)
                    break
            assert url, (head, proc.communicate(timeout=GUARD))
            yield Served(proc, head, url)
        finally:
            proc.kill()


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Served]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# callers\n{KEY}\n\n")
    yield from serve("--demo-rate", "0", "--api-key-file", str(keys), "--allowed-host", "box.lan")


def test_serve_with_a_key_file_authenticates_and_logs_no_stream_id(keyed: Served) -> None:
    assert any("callers need one of the 1 keys" in line for line in keyed.head), keyed.head
    assert any("box.lan" in line for line in keyed.head)
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=GUARD) as client:
        anonymous = client.post(
            keyed.url + "/api/chat", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
        reply = client.post(
            keyed.url + "/api/chat",
            json={"messages": [{"role": "user", "content": "x"}]},
            headers=auth,
        )
        assert reply.status_code == 200
        first = next(line for line in reply.text.splitlines() if line.startswith("data:"))
        sid = json.loads(first[5:])["id"]
        assert client.get(f"{keyed.url}/api/chat/{sid}", headers=auth).status_code == 200
        assert client.delete(f"{keyed.url}/api/chat/{sid}", headers=auth).status_code == 204
        rebound = client.get(
            keyed.url + "/v1/models", headers={**auth, "host": "rebind.attacker.example"}
        )
        assert rebound.status_code == 400
        assert rebound.json()["error"]["code"] == "host_not_allowed"
        extra = client.get(keyed.url + "/v1/models", headers={**auth, "host": "box.lan:1234"})
        assert extra.status_code == 200
    log = keyed.stop()
    assert "GET /api/chat/<stream-id>" in log  # the access log is on, and masked
    assert sid not in log


def test_serve_relay_without_keys_says_loopback_only() -> None:
    for served in serve("--upstream", "http://127.0.0.1:9/v1", "--api-key", "sk-x-123456"):
        assert any("loopback callers only" in line for line in served.head), served.head
        with httpx.Client(timeout=GUARD) as client:
            remote = client.get(
                served.url + "/v1/models", headers={"x-forwarded-for": "203.0.113.1"}
            )
        assert remote.status_code == 403
        served.stop()


def test_serve_refuses_an_empty_key_file(tmp_path: Path) -> None:
    empty = tmp_path / "none.txt"
    empty.write_text("# nobody\n")
    result = subprocess.run(
        aistream_cmd("serve", "--port", "0", "--api-key-file", str(empty)),
        capture_output=True,
        text=True,
        timeout=GUARD,
    )
    assert result.returncode == 2
    assert "holds no keys" in result.stderr


def test_serve_closes_connections_that_send_no_headers_or_too_slowly() -> None:
    for served in serve("--demo-rate", "0", "--header-timeout", "0.5"):
        port = int(served.url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=GUARD) as silent,
            socket.create_connection(("127.0.0.1", port), timeout=GUARD) as slow,
        ):
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no end
            assert silent.recv(100) == b""  # closed by the server, not by our timeout
            assert slow.recv(100) == b""
        with httpx.Client(timeout=GUARD) as client:  # a request in time is served as ever
            assert client.get(served.url + "/healthz").status_code == 200
        served.stop()
