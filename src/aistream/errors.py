"""Public exception hierarchy. A leaf module: imports nothing from aistream.

```
* AIStreamError                 base of everything aistream raises
  + APIStatusError              the server refused (HTTP >= 400) or sent an in-stream error
  + ConnectionLostError         could not connect, or the stream dropped, and retries ran out
  + StreamTimeoutError          silence past `timeout` or no content past `stall_timeout`
                                (also a TimeoutError)
  + ProtocolError               bytes we cannot understand, or an event over the size limit
  + StreamBusyError             send() while a turn is already streaming (also a RuntimeError)
```

Every message says what happened and what to do about it. No exception carries a secret: URLs
and headers pass through `aistream._redact` before they reach a message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AIStreamError",
    "APIStatusError",
    "ConnectionLostError",
    "ProtocolError",
    "StreamBusyError",
    "StreamTimeoutError",
]


class AIStreamError(Exception):
    """Base class of every error aistream raises."""


class APIStatusError(AIStreamError):
    """The server answered with an error: an HTTP status >= 400 or an error event in the stream.

    Attributes:
        status_code: The HTTP status (for an error sent inside a 200 stream: 200).
        body: The server's error body, parsed JSON when it was JSON, else text.
        code: The provider's error code or type when it sent one (e.g. ``"overloaded_error"``).
        retryable: Whether the failure is transient, when the server said so (an in-stream
            error); None lets the status code decide.
        retry_after: Seconds the server asked us to wait (``Retry-After``), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


class ConnectionLostError(AIStreamError):
    """Could not connect, or the stream dropped before its end, and no retry was left."""


class StreamTimeoutError(AIStreamError, TimeoutError):
    """The connection was silent past `timeout`, or no content arrived within `stall_timeout`."""


class ProtocolError(AIStreamError):
    """The server sent bytes we cannot understand, or an event larger than the configured limit."""


class StreamBusyError(AIStreamError, RuntimeError):
    """A turn is already streaming on this AIStream; await it or call stop() first."""
