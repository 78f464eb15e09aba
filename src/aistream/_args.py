"""Checks of AIStream's constructor arguments, made at construction.

A wrong argument found at the first failed attempt (``retry=5`` crashing in the backoff with an
AttributeError) is found too late and reads like a bug in aistream. Each check here raises at
construction with what was given and a correct call. Imports `models` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .models import RetryConfig

__all__ = ["check_arguments", "coerce_retry"]

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token

_RETRY_EXAMPLE = (
    "AIStream(url, retry=RetryConfig(max_retries=5)) or AIStream(url, retry={'max_retries': 5})"
)


def _kind(value: object) -> str:
    return type(value).__name__


def coerce_retry(retry: object, default: RetryConfig) -> RetryConfig:
    """`retry` as a RetryConfig: None is `default`, a dict is RetryConfig's fields.

    Raises:
        TypeError: `retry` is neither (e.g. ``5`` or ``"exponential"``).
        pydantic.ValidationError: a dict whose fields are wrong (a ValueError).
    """
    if retry is None:
        return default
    if isinstance(retry, RetryConfig):
        return retry
    if isinstance(retry, Mapping):
        unknown = sorted(str(k) for k in retry if k not in RetryConfig.model_fields)
        if unknown:
            known = ", ".join(RetryConfig.model_fields)
            raise TypeError(
                f"retry has unknown field(s) {', '.join(unknown)}; RetryConfig's fields are "
                f"{known}; e.g. {_RETRY_EXAMPLE}"
            )
        return RetryConfig.model_validate(dict(retry))
    raise TypeError(
        f"retry must be a RetryConfig or a dict of its fields, not {_kind(retry)} "
        f"({retry!r}); e.g. {_RETRY_EXAMPLE}"
    )


def _optional(name: str, value: object, kind: type | tuple[type, ...], example: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {example} or None, not {_kind(value)} ({value!r})")


def _seconds(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None, not {_kind(value)} ({value!r}); "
            f"e.g. AIStream(url, {name}=30.0)"
        )
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{name} must be a positive number of seconds or None; got {value}")


def _headers(headers: object) -> None:
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"headers must be a mapping of names to values, not {_kind(headers)}; "
            "e.g. AIStream(url, headers={'Authorization': 'Bearer ...'})"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"headers must map str to str; header {name!r} has a {_kind(value)} value"
            )
        if not value.isascii() or not name.isascii():  # the value may be a secret: never shown
            raise ValueError(
                f"header {name!r} holds non-ASCII characters, which HTTP headers cannot carry; "
                "check for a stray character pasted with the value"
            )
        if _HEADER_NAME.fullmatch(name) is None:
            raise ValueError(
                f"header name {name!r} is not a valid HTTP header name (letters, digits and "
                "!#$%&'*+-.^_`|~ only; no spaces or colons)"
            )
        if "\r" in value or "\n" in value or "\0" in value:  # would end the header early
            raise ValueError(
                f"header {name!r} holds a line break or NUL, which would end the header early; "
                "check for a trailing newline read with the value from a file"
            )


def _callable(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{name} must be a function, not {_kind(value)} ({value!r})")


def check_arguments(
    *,
    model: object,
    headers: object,
    system_prompt: object,
    timeout: object,
    stall_timeout: object,
    listeners: Mapping[str, object],
    client: object,
    client_class: type,
    options: object,
    max_event_bytes: object,
    sleep: object,
    rng: object,
    max_steps: object = 8,
    max_reply_chars: object = None,
) -> None:
    """Raise TypeError / ValueError for the first argument of AIStream that cannot work.

    (``tools=`` and ``messages=`` are checked where they are read: `_tools.coerce_tools`,
    `_history.coerce_messages`.)
    """
    _optional("model", model, str, "a model name such as 'gpt-4o-mini'")
    _optional("system_prompt", system_prompt, str, "a str")
    _headers(headers)
    _seconds("timeout", timeout)
    _seconds("stall_timeout", stall_timeout)
    for name, listener in listeners.items():
        _callable(name, listener, optional=True)
    if client is not None and not isinstance(client, client_class):
        raise TypeError(
            f"client must be an httpx.AsyncClient or None, not {_kind(client)} "
            "(an httpx.Client is synchronous: use httpx.AsyncClient())"
        )
    _optional("options", options, Mapping, "a dict of request fields such as {'temperature': 0}")
    if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int):
        raise TypeError(f"max_event_bytes must be an int, not {_kind(max_event_bytes)}")
    if max_event_bytes <= 0:
        raise ValueError(f"max_event_bytes must be positive; got {max_event_bytes}")
    for name, fn in (("sleep", sleep), ("rng", rng)):
        _callable(name, fn, optional=False)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int):
        raise TypeError(
            f"max_steps must be an int (model calls per send), not {_kind(max_steps)} "
            f"({max_steps!r}); e.g. AIStream(url, tools=[f], max_steps=4)"
        )
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1 (one model call); got {max_steps}")
    if max_reply_chars is not None and (
        isinstance(max_reply_chars, bool)
        or not isinstance(max_reply_chars, int)
        or max_reply_chars < 1
    ):
        raise ValueError(
            "max_reply_chars must be a whole number of characters >= 1, or None for no "
            f"bound; got {max_reply_chars!r}"
        )
