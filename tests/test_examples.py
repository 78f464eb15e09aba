"""Every example runs: no key, no network, exit 0, and prints a reply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["script.py"], id="script"),
        pytest.param(["notebook_style.py"], id="notebook_style"),
        pytest.param(["on_token.py"], id="on_token"),
        pytest.param(["tools.py"], id="tools"),
        pytest.param(["fastapi_relay.py", "--check"], id="fastapi_relay"),
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
