"""Patches for variants that run aistream differently from its defaults, in the same run.

Nothing here changes aistream itself: each patch is a context manager that swaps one setting
for the span of a benchmark run.

- `stdlib_json`: the dialects parse event JSON with the standard library's ``json`` even when
  orjson is installed (aistream uses orjson when it can import it), so the suite shows both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aistream._wire import _json


@contextlib.contextmanager
def stdlib_json() -> Iterator[None]:
    """Parse with ``json.loads`` for the span of the block, then restore the accelerator."""
    with _json.parser("json"):
        yield
