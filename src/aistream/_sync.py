"""Run a coroutine to completion from blocking code, with or without a running event loop.

With no loop running (a script) this is `asyncio.run`. Inside a running loop (Jupyter, an
async framework) the coroutine runs on its own loop in a worker thread, so the caller's loop
is never re-entered (no nest_asyncio).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(
    factory: Callable[[], Coroutine[Any, Any, T]],
    on_interrupt: Callable[[], None] | None = None,
) -> T:
    """Run ``factory()`` to completion and return its result (or raise its exception).

    Args:
        factory: Makes the coroutine; called on the thread that runs it.
        on_interrupt: Called when Ctrl-C arrives while a worker thread runs the coroutine
            (e.g. to stop the stream), before waiting for it to finish.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:  # outside the except: the turn's own error must not chain onto this one
        return asyncio.run(factory())

    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(asyncio.run(factory()))
        except BaseException as exc:  # handed to the calling thread below
            failure.append(exc)

    worker = threading.Thread(target=work, name="aistream-send-sync", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        worker.join()
        raise
    if failure:
        raise failure[0]
    return outcome[0]
