"""``aistream chat`` shows tool calls and results; ``aistream demo`` runs a tool loop."""

from __future__ import annotations

import re

from aistream._tour import add_numbers, current_time
from tests.test_cli import run


def test_chat_with_the_demo_model_runs_a_sample_tool_and_shows_call_and_result() -> None:
    result = run("chat", stdin="Please add_numbers for me\n")
    assert result.returncode == 0, result.stderr
    call = re.search(r"\[tool call add_numbers (\{.*\})]", result.stderr)
    done = re.search(r"\[tool add_numbers returned: ([0-9.]+)]", result.stderr)
    assert call and done, result.stderr
    assert result.stdout.startswith(f"The add_numbers tool returned: {done.group(1)}")


def test_chat_without_tools_shows_the_models_calls_but_runs_nothing() -> None:
    result = run("chat", "--no-tools", stdin="Please add_numbers for me\n")
    assert result.returncode == 0, result.stderr
    assert "[tool call" not in result.stderr  # no tools declared: the demo calls none
    assert "[tool add_numbers" not in result.stderr


def test_demo_shows_a_tool_loop() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4. Tools:" in result.stdout
    assert "[tool call add_numbers" in result.stdout
    assert "two model calls; add_numbers ran once" in result.stdout


def test_sample_tools_do_what_they_say() -> None:
    assert add_numbers(2, 3.5) == 5.5
    assert current_time("Oslo").endswith("UTC (asked for Oslo)")
