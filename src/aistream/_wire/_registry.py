"""Dialect lookup by protocol name, and the header each protocol carries its key in. Stdlib only.

``auto`` never picks ollama: Ollama's ``/api/chat`` is also the native protocol's path, and
`detect_protocol` keeps that path for native. Ollama is chosen with ``protocol="ollama"``.
"""

from __future__ import annotations

from collections.abc import Callable

from ._anthropic import AnthropicDialect
from ._dialect import Dialect, detect_protocol
from ._gemini import GeminiDialect
from ._native import NativeDialect
from ._ollama import OllamaDialect
from ._openai import OpenAIDialect
from ._responses import ResponsesDialect

DIALECTS: dict[str, Callable[[], Dialect]] = {
    "native": NativeDialect,
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
    "ollama": OllamaDialect,
    "responses": ResponsesDialect,
    "gemini": GeminiDialect,
}


def dialect_factory(protocol: str, endpoint: str) -> Callable[[], Dialect]:
    """The dialect class for `protocol` ("auto" picks one from `endpoint`'s path).

    Raises:
        ValueError: the protocol is unknown.
    """
    name = detect_protocol(endpoint) if protocol == "auto" else protocol
    try:
        return DIALECTS[name]
    except KeyError:
        known = ", ".join(sorted([*DIALECTS, "auto"]))
        raise ValueError(f"unknown protocol {protocol!r}; use one of: {known}") from None


def auth_headers(protocol: str, api_key: str) -> dict[str, str]:
    """The header that carries `api_key` for `protocol` (a resolved name, not "auto").

    ``x-api-key`` for anthropic, ``x-goog-api-key`` for gemini, else ``Authorization: Bearer``
    (native, openai, responses; Ollama needs none, but a proxy in front of it may). Any other
    header a provider wants (``anthropic-version``) is the dialect's to send.
    """
    if protocol == "anthropic":
        return {"x-api-key": api_key}
    if protocol == "gemini":
        return {"x-goog-api-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}
