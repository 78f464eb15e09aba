"""Every example runs: no key, no network, exit 0, and prints a reply."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aistream import AIStream

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["script.py"], id="script"),
        pytest.param(["notebook_style.py"], id="notebook_style"),
        pytest.param(["on_token.py"], id="on_token"),
        pytest.param(["tools.py"], id="tools"),
        pytest.param(["fastapi_relay.py", "--check"], id="fastapi_relay"),
        pytest.param(["openai_responses.py"], id="openai_responses"),
    ],
)
def test_example_runs_and_exits_0(argv: list[str]) -> None:
    env = {**os.environ, "AISTREAM_EXAMPLE_RATE": "0", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.strip()) > 20, result.stdout


EXAMPLE_KEY = "example-key-for-the-test"


@pytest.fixture
def relay_example() -> Iterator[str]:
    """``uvicorn fastapi_relay:app`` from the examples directory, as its docstring says."""
    with subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_relay:app", "--port", "0"],
        cwd=EXAMPLES,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "CHAT_API_KEYS": EXAMPLE_KEY},
    ) as proc:
        try:
            assert proc.stderr is not None
            url = None
            for line in proc.stderr:  # bounded by the process: EOF if it dies
                if match := re.search(r"running on (http://\S+)", line):
                    url = match.group(1)
                    break
            assert url, "uvicorn fastapi_relay:app did not start"
            yield url
        finally:
            proc.terminate()
            proc.wait(60)


def test_fastapi_relay_starts_with_the_uvicorn_command_and_its_page_can_stop(
    relay_example: str,
) -> None:
    page = httpx.get(relay_example + "/", timeout=60).text
    assert 'id="stop"' in page and '{method: "DELETE"}' in page  # a Stop button that DELETEs
    assert "send.disabled = true" in page  # no overlapping sends
    assert "innerHTML" not in page and "textContent = text" in page  # model text stays text

    # What the page does, over HTTP: a reply at /ai/api/chat, stopped by DELETE of its stream.
    chat = AIStream(
        relay_example + "/ai/api/chat", headers={"Authorization": f"Bearer {EXAMPLE_KEY}"}
    )
    chat.on("token", lambda token: chat.stop())
    reply = chat.send_sync("Tell me a long story.")
    assert reply.finish_reason == "stopped" and reply.content
