"""aistream: stream conversations with language models, reliably.

```py
from aistream import AIStream

chat = AIStream("http://127.0.0.1:8000/api/chat")
chat.on("token", lambda token: print(token, end="", flush=True))
reply = await chat.send("Hello")
```

Server parts live in `aistream.server` (``pip install 'aistream[server]'``); importing
`aistream` never loads them.
"""

from importlib import metadata as _metadata

from ._stream import AIStream
from .errors import (
    AIStreamError,
    APIStatusError,
    ConnectionLostError,
    ProtocolError,
    StreamBusyError,
    StreamTimeoutError,
)
from .models import Image, Message, RetryConfig, RetryEvent, Tool, ToolCall, ToolResult, Usage

try:
    __version__ = _metadata.version("aistream")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "AIStream",
    "AIStreamError",
    "APIStatusError",
    "ConnectionLostError",
    "Image",
    "Message",
    "ProtocolError",
    "RetryConfig",
    "RetryEvent",
    "StreamBusyError",
    "StreamTimeoutError",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
]

for _name in __all__:
    globals()[_name].__module__ = "aistream"
del _name
