"""The dialect registry: lookup by protocol name, and the header each protocol's key goes in."""

from __future__ import annotations

from typing import get_args

import pytest

from aistream._wire._registry import DIALECTS, auth_headers, dialect_factory
from aistream.types import ProtocolName


def test_every_protocol_name_but_auto_has_a_dialect() -> None:
    assert sorted(DIALECTS) == sorted(p for p in get_args(ProtocolName) if p != "auto")


def test_an_unknown_protocol_is_a_value_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'nope'; use one of: anthropic, auto"):
        dialect_factory("nope", "http://127.0.0.1/api/chat")


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("anthropic", {"x-api-key": "k"}),
        ("gemini", {"x-goog-api-key": "k"}),
        ("openai", {"Authorization": "Bearer k"}),
        ("responses", {"Authorization": "Bearer k"}),
        ("native", {"Authorization": "Bearer k"}),
        ("ollama", {"Authorization": "Bearer k"}),
    ],
)
def test_auth_headers_put_the_key_where_the_protocol_expects_it(
    protocol: str, expected: dict[str, str]
) -> None:
    assert auth_headers(protocol, "k") == expected
