"""aistream.server: stream replies to browsers and to `AIStream` from Starlette / FastAPI.

Public surface only; the code lives in private modules. Needs the ``server`` extra
(``pip install 'aistream[server]'``: starlette, uvicorn, anyio). `aistream` itself never
imports this package.

```py
from aistream.server import create_app, EventStreamResponse

app = create_app()                                                   # built-in demo model
app = create_app(upstream="https://api.openai.com/v1", api_key=key)  # relay an upstream
```

A `ChatBackend` of your own (``create_app(backend=...)``) takes a `ChatRequest` (its
`ChatMessage`s, with `ToolCallPart`s, `ImagePart`s and `ToolSpec`s) and yields the events
exported here (`TextDelta`, `ReasoningDelta`, `ToolCallDone`, `UsageReport`, `FinishReason`,
`Metadata`, `ServerError`, `Done`; or plain str tokens), the same ones `EventStreamResponse`
takes. They are the wire layer's own classes, re-exported (their ``__module__`` is left alone).

``create_app(store="redis://...")`` keeps streams in Redis for replicas (the README's
"Running several replicas"); `RedisReplayStore` (loaded on first use, with the ``redis``
extra) is that store, to pass configured (key prefix, timeouts) as ``store=``.
"""

from __future__ import annotations

import typing as _typing

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "aistream.server needs the server extra: pip install 'aistream[server]'"
    ) from exc

from .._wire._dialect import ChatMessage, ChatRequest, ImagePart, ToolCallPart, ToolSpec
from .._wire._events import (
    Done,
    FinishReason,
    Metadata,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._app import create_app
from ._demo import DemoModel
from ._generations import ChatBackend
from ._guard import Principal
from ._limits import Limits
from ._policy import Policy
from ._relay import UpstreamRelay
from ._replay import MemoryReplayStore, Replay, ReplayFull, ReplayStore, StoreUnavailable
from ._response import EventStreamResponse

if _typing.TYPE_CHECKING:
    from ._redis import RedisReplayStore as RedisReplayStore

__all__ = [
    "ChatBackend",
    "ChatMessage",
    "ChatRequest",
    "DemoModel",
    "Done",
    "EventStreamResponse",
    "FinishReason",
    "ImagePart",
    "Limits",
    "MemoryReplayStore",
    "Metadata",
    "Policy",
    "Principal",
    "ReasoningDelta",
    "Replay",
    "ReplayFull",
    "ReplayStore",
    "ServerError",
    "StoreUnavailable",
    "StreamEvent",
    "TextDelta",
    "ToolCallDone",
    "ToolCallPart",
    "ToolSpec",
    "UpstreamRelay",
    "UsageReport",
    "create_app",
]

for _name in (
    "ChatBackend",
    "DemoModel",
    "EventStreamResponse",
    "Limits",
    "MemoryReplayStore",
    "Policy",
    "Principal",
    "Replay",
    "ReplayFull",
    "ReplayStore",
    "StoreUnavailable",
    "UpstreamRelay",
    "create_app",
):
    globals()[_name].__module__ = "aistream.server"
del _name


def __getattr__(name: str) -> _typing.Any:
    """`RedisReplayStore` on first use: only then is redis-py (the ``redis`` extra) imported."""
    if name == "RedisReplayStore":
        from ._redis import RedisReplayStore as RedisReplayStore

        return RedisReplayStore
    raise AttributeError(f"module 'aistream.server' has no attribute {name!r}")
