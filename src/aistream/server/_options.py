"""Sampling options of a relayed request: which are known, their checks, their upstream names.

A request body is untrusted. `request_options` keeps only the known sampling options (in the
portable OpenAI vocabulary: ``temperature``, ``top_p``, ``max_tokens``, ``stop``, …), checks
each one's type and size, and names everything else it drops in one WARNING.
`upstream_options` then writes the portable options in the upstream's own fields (Anthropic's
``stop_sequences``, Ollama's ``format``) and drops, with a WARNING, what that upstream has no
field for. The server's policy (ranges, a ``max_tokens`` ceiling) belongs between the two:
extend `request_options`' result, never the raw body.

Stdlib only: the request parsers in `_formats` turn `InvalidOption` into their 422 / 400.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["KNOWN_OPTIONS", "InvalidOption", "request_options", "upstream_options"]

log = logging.getLogger("aistream.server")

_MAX_STOP: Final = 16  # stop sequences per request
_MAX_STOP_CHARS: Final = 1000  # characters per stop sequence
_MAX_NAMES_LOGGED: Final = 10
_MAX_NAME_CHARS: Final = 40


def _number(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, f"must be a number; got {value!r:.60}")
    return value


def _count(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, f"must be a whole number of at least 1; got {value!r:.60}")
    return value


def _integer(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"must be a whole number; got {value!r:.60}")
    return value


def _stop(name: str, value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or not 0 < len(items) <= _MAX_STOP
        or not all(isinstance(s, str) and 0 < len(s) <= _MAX_STOP_CHARS for s in items)
    ):
        raise _bad(
            name,
            f"must be a string or a list of 1 to {_MAX_STOP} non-empty strings of at most "
            f"{_MAX_STOP_CHARS} characters",
        )
    return value


def _response_format(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _bad(name, 'must be an object with a "type", e.g. {"type": "json_object"}')
    return value


_MODES: Final = ("auto", "none", "required")
_MAX_TOOL_NAME: Final = 64  # OpenAI's bound on a function name


def _tool_choice(name: str, value: Any) -> Any:
    """ "auto" / "none" / "required", or one function by name, in Chat Completions' form
    ``{"type": "function", "function": {"name": ...}}``; the Responses form
    ``{"type": "function", "name": ...}`` is accepted and written in the Chat one."""
    if value in _MODES:
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        tool = function.get("name") if isinstance(function, dict) else value.get("name")
        if isinstance(tool, str) and 0 < len(tool) <= _MAX_TOOL_NAME:
            return {"type": "function", "function": {"name": tool}}
    raise _bad(
        name,
        'must be "auto", "none", "required" or {"type": "function", "function": {"name": '
        f'"<a tool of the request, at most {_MAX_TOOL_NAME} characters>"}}}}',
    )


def _flag(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _bad(name, f"must be true or false; got {value!r:.60}")
    return value


class InvalidOption(ValueError):
    """A known option with a value of the wrong type or size; `name` is the field."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _bad(name: str, what: str) -> InvalidOption:
    return InvalidOption(name, f'"{name}" {what}')


#: The sampling options the relay forwards, by their portable (OpenAI) name, with their check.
KNOWN_OPTIONS: Final[Mapping[str, Callable[[str, Any], Any]]] = {
    "temperature": _number,
    "top_p": _number,
    "top_k": _count,
    "max_tokens": _count,
    "stop": _stop,
    "seed": _integer,
    "response_format": _response_format,
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _flag,
}
_TOOL_OPTIONS: Final = ("tool_choice", "parallel_tool_calls")  # only with tools
#: Other names for a known option: the first name present wins.
_ALIASES: Final = {"max_completion_tokens": "max_tokens"}


def _names(keys: list[str]) -> str:
    shown = [repr(k[:_MAX_NAME_CHARS]) for k in sorted(keys)[:_MAX_NAMES_LOGGED]]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def request_options(body: Mapping[str, Any], consumed: frozenset[str]) -> dict[str, Any]:
    """The known sampling options of `body`, checked, under their portable names.

    `consumed` are the fields the request shape itself reads (``messages``, ``model``, …).
    Any other field is dropped, with one WARNING naming them all.

    ```py
    request_options({"messages": [], "temperature": 0.2, "max_completion_tokens": 5,
                     "logprobs": True}, frozenset({"messages"}))
    # {"temperature": 0.2, "max_tokens": 5}; WARNING names 'logprobs'
    ```

    Raises:
        InvalidOption: a known option of the wrong type or size.
    """
    options: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in body.items():
        if key in consumed:
            continue
        name = _ALIASES.get(key, key)
        check = KNOWN_OPTIONS.get(name)
        if check is None:
            dropped.append(str(key))
        elif value is not None and name not in options:
            options[name] = check(key, value)
    if dropped:
        log.warning(
            "dropped request fields the relay does not forward: %s (it forwards %s)",
            _names(dropped),
            ", ".join(KNOWN_OPTIONS),
        )
    return options


def _function_name(choice: Any) -> str | None:
    return choice["function"]["name"] if isinstance(choice, dict) else None


# tool_choice's modes in Anthropic's and Gemini's words ("auto" when none is given)
_ANTHROPIC_MODES: Final = {"auto": "auto", "required": "any", "none": "none"}
_GEMINI_MODES: Final = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def _anthropic(options: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("temperature", "top_p", "top_k", "max_tokens"):
            out[key] = value
        elif key == "stop":
            out["stop_sequences"] = [value] if isinstance(value, str) else value
        elif key not in _TOOL_OPTIONS:
            dropped.append(key)
    choice = options.get("tool_choice", "auto")
    if "tool_choice" in options or options.get("parallel_tool_calls") is False:
        name = _function_name(choice)
        tool_choice: dict[str, Any] = (
            {"type": "tool", "name": name}
            if name
            else {"type": _ANTHROPIC_MODES.get(choice, "auto")}
        )
        if options.get("parallel_tool_calls") is False and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = tool_choice
    return out


def _openai(options: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    out = dict(options)
    if out.pop("top_k", None) is not None:  # OpenAI refuses it as an unknown argument
        dropped.append("top_k")
    return out


def _ollama(options: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    out = dict(options)  # OllamaDialect moves the sampling ones into its "options" object
    for key in _TOOL_OPTIONS:  # Ollama always lets the model choose
        if out.pop(key, None) is not None:
            dropped.append(key)
    response_format = out.pop("response_format", None)
    if response_format is not None:
        kind = response_format.get("type")
        schema = response_format.get("json_schema")
        if kind == "json_object":
            out["format"] = "json"
        elif kind == "json_schema" and isinstance(schema, dict) and "schema" in schema:
            out["format"] = schema["schema"]
        elif kind != "text":
            dropped.append("response_format")
    return out


def _responses(options: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}  # ResponsesDialect writes max_tokens as max_output_tokens
    for key, value in options.items():
        if key in ("temperature", "top_p", "max_tokens", "response_format", "parallel_tool_calls"):
            out[key] = value
        elif key == "tool_choice":  # a function by name is flat in the Responses API
            name = _function_name(value)
            out[key] = {"type": "function", "name": name} if name else value
        else:  # stop, seed, penalties, top_k: the Responses API has no field for them
            dropped.append(key)
    return out


def _gemini(options: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    out = dict(options)  # GeminiDialect writes them into generationConfig
    choice = out.pop("tool_choice", None)
    if choice is not None:  # a top-level toolConfig
        name = _function_name(choice)
        config: dict[str, Any] = {"mode": "ANY" if name else _GEMINI_MODES.get(choice, "AUTO")}
        if name:
            config["allowedFunctionNames"] = [name]
        out["toolConfig"] = {"functionCallingConfig": config}
    if out.pop("parallel_tool_calls", None) is not None:
        dropped.append("parallel_tool_calls")
    response_format = out.pop("response_format", None)
    if response_format is not None:
        kind = response_format.get("type")
        schema = response_format.get("json_schema")
        if kind == "json_object" or (
            kind == "json_schema" and isinstance(schema, dict) and "schema" in schema
        ):
            out["response_format"] = response_format
        elif kind != "text":
            dropped.append("response_format")
    return out


_UPSTREAM: Final[dict[str, Callable[[Mapping[str, Any], list[str]], dict[str, Any]]]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "ollama": _ollama,
    "responses": _responses,
    "gemini": _gemini,
}


def upstream_options(
    options: Mapping[str, Any], protocol: str, tools: bool = True
) -> dict[str, Any]:
    """Portable `options` written in the fields of a `protocol` upstream.

    What that upstream has no field for is dropped with one WARNING naming it; so are
    ``tool_choice`` and ``parallel_tool_calls`` for a request without `tools` (providers
    refuse them then).

    ```py
    upstream_options({"stop": "END", "seed": 1}, "anthropic")
    # {"stop_sequences": ["END"]}; WARNING names 'seed'
    ```
    """
    dropped: list[str] = []
    if not tools and any(key in options for key in _TOOL_OPTIONS):
        log.warning(
            "dropped %s: the request has no tools to choose from",
            _names([key for key in _TOOL_OPTIONS if key in options]),
        )
        options = {k: v for k, v in options.items() if k not in _TOOL_OPTIONS}
    translate = _UPSTREAM.get(protocol, _openai)
    out = translate(options, dropped)
    if dropped:
        log.warning(
            "dropped request options the %s upstream has no field for: %s",
            protocol,
            _names(dropped),
        )
    return out
