"""aistream.server: stream replies to browsers and to `AIStream` from Starlette / FastAPI.

Public surface only; the code lives in private modules. Needs the ``server`` extra
(``pip install 'aistream[server]'``: starlette, uvicorn, anyio). `aistream` itself never
imports this package.

```py
from aistream.server import create_app, EventStreamResponse

app = create_app()                                                   # built-in demo model
app = create_app(upstream="https://api.openai.com/v1", api_key=key)  # relay an upstream
```
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "aistream.server needs the server extra: pip install 'aistream[server]'"
    ) from exc

from ._app import ChatBackend, create_app
from ._demo import DemoModel
from ._guard import Principal
from ._limits import Limits
from ._relay import UpstreamRelay
from ._replay import MemoryReplayStore, Replay, ReplayFull, ReplayStore
from ._response import EventStreamResponse

__all__ = [
    "ChatBackend",
    "DemoModel",
    "EventStreamResponse",
    "Limits",
    "MemoryReplayStore",
    "Principal",
    "Replay",
    "ReplayFull",
    "ReplayStore",
    "UpstreamRelay",
    "create_app",
]

for _name in __all__:
    globals()[_name].__module__ = "aistream.server"
del _name
