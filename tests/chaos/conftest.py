"""The chaos suite prints its campaign figures in pytest's terminal summary (also without -s)."""

from __future__ import annotations

import pytest

from tests.chaos.campaign import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
