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
and headers pass through `redact_url` / `redact_headers` before they reach a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "AIStreamError",
    "APIStatusError",
    "ConnectionLostError",
    "ProtocolError",
    "StreamBusyError",
    "StreamTimeoutError",
    "redact_headers",
    "redact_text",
    "redact_url",
]

#: Header names whose values never appear in logs, reprs or messages (compared lowercased).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
    }
)
_SENSITIVE_QUERY = frozenset({"key", "api_key", "apikey", "token", "access_token", "sig"})
_REDACTED = "[redacted]"


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


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Return a copy of `headers` with secret values replaced by ``[redacted]``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (_REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in items}


def redact_url(url: str) -> str:
    """Return `url` without user info and with secret-looking query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, _REDACTED if k.lower() in _SENSITIVE_QUERY else v) for k, v in pairs], safe="[]"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (at least 4 characters long) in `text`."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return text


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")


def redact_bearer(text: str) -> str:
    """Mask ``Bearer <token>`` fragments that a server echoed back into an error body."""
    return _BEARER.sub(r"\1" + _REDACTED, text)
