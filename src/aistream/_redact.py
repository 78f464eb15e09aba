"""Secrets out of what we show: masks for header values, URLs and error text. A leaf module.

Every URL, header set or server error text that may reach a log line, a repr or an exception
message passes through here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
