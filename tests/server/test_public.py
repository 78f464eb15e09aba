"""The public surface of aistream.server, and its independence from the client package."""

from __future__ import annotations

from types import ModuleType

import aistream.server


def test_server_all_is_sorted_and_complete() -> None:
    public = [
        name
        for name, value in vars(aistream.server).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    ]
    assert aistream.server.__all__ == sorted(public)  # ruff RUF022 order
    assert {"create_app", "EventStreamResponse"} <= set(aistream.server.__all__)


def test_server_names_show_the_public_module() -> None:
    assert repr(aistream.server.EventStreamResponse).startswith("<class 'aistream.server.")
