"""JSON on the wire: compact request bodies, and event parsing with the accelerator chosen here.

orjson, an optional extra (``aistream[fast]``), parses event JSON about three times faster
than the standard library; it is never required. This module is the one place that imports
it (the only non-stdlib import `_wire` allows) and the one place that decides: orjson when it
can be imported, else ``json``'s C scanner called directly. What orjson refuses is parsed again
by ``json``, so results never depend on which is installed (tests/wire/test_fast_path.py).
"""

from __future__ import annotations

import contextlib
import json
import json.scanner
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

try:  # optional: ~3x faster JSON per event when installed
    import orjson

    _orjson_loads: Callable[[Any], Any] | None = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = None


def json_body(payload: Mapping[str, Any]) -> bytes:
    """Serialise a request body compactly as UTF-8 JSON."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (say in a caller's message): escape it
        return json.dumps(payload, separators=(",", ":")).encode()


#: The C scanner inside json.loads, called directly: json.loads adds ~1 µs of Python per call
#: (type checks, two whitespace regex matches) on a ~3 µs parse of a typical chunk.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types the C scanner's argument oddly
)


def _utf8_json(data: bytes) -> Any:
    """json.loads of UTF-8 bytes (not json.loads(bytes), which guesses UTF-16/32 from the first
    bytes: SSE is always UTF-8), via the scanner when the value fills the text exactly."""
    text = data.decode()
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:  # no JSON value at 0 (leading whitespace, say): json.loads decides
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _utf8_json_whole_chars(data: bytes) -> Any:
    """`_utf8_json`, refusing surrogate escapes (backslash, ``ud``): a fast path's text never
    holds half a character (orjson refuses lone surrogates itself); the full path joins them."""
    if 92 in data and (b"\\ud" in data or b"\\uD" in data):  # 92: a backslash (memchr)
        raise ValueError("a UTF-16 surrogate escape")
    return _utf8_json(data)


# The choice, made once here: orjson for both when it is installed, else the stdlib's.
# Both must raise ValueError for text that is not JSON (or bytes that are not UTF-8), as
# json.loads does; `_loads_bytes` also for a lone surrogate (orjson does).
_loads: Callable[[str], Any] = json.loads if _orjson_loads is None else _orjson_loads
_loads_bytes: Callable[[bytes], Any] = (
    _utf8_json_whole_chars if _orjson_loads is None else _orjson_loads
)

#: The parser in use by default: "orjson" when it is installed, else "json".
DEFAULT_PARSER: Literal["json", "orjson"] = "json" if _orjson_loads is None else "orjson"


@contextlib.contextmanager
def parser(name: Literal["json", "orjson"]) -> Iterator[None]:
    """Parse event JSON with `name` for the span of the block, then restore the choice: the
    tests and benchmarks compare both. Not thread-safe; never used by the library itself."""
    global _loads, _loads_bytes
    saved = _loads, _loads_bytes
    if name == "orjson":
        if _orjson_loads is None:
            raise RuntimeError("orjson is not installed")
        _loads = _loads_bytes = _orjson_loads
    else:
        _loads, _loads_bytes = json.loads, _utf8_json_whole_chars
    try:
        yield
    finally:
        _loads, _loads_bytes = saved


def loads_object(data: str) -> dict[str, Any] | None:
    """Parse `data` as a JSON object, or return None when it is not one.

    What an accelerator refuses (orjson: lone surrogate escapes, integers past 64 bits, NaN,
    deep nesting) is tried again with json.loads, so the result never depends on it.
    """
    try:
        value = _loads(data)
    except (ValueError, RecursionError):
        if _loads is json.loads:
            return None
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def loads_object_bytes(data: bytes) -> dict[str, Any] | None:
    """Parse UTF-8 `data` as a JSON object for a fast path, or return None when it is not one
    (or not UTF-8, or refused by an accelerator): the caller then takes the full path."""
    try:
        value = _loads_bytes(data)
    except (ValueError, RecursionError):
        return None
    return value if type(value) is dict else None
