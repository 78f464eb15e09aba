"""SurrogateJoiner: text cut at any UTF-16 code unit comes back whole; lone halves become U+FFFD."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from aistream._wire._text import SurrogateJoiner, has_surrogate

ASTRAL = st.text(st.sampled_from("a é€😀🤔𝄞\U0010ffff"), max_size=30)


def utf16_pieces(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at UTF-16 code unit positions: astral characters may fall apart in halves."""
    units = text.encode("utf-16-le")
    bounds = sorted({0, len(units) // 2, *(c for c in cuts if c <= len(units) // 2)})
    return [
        units[2 * a : 2 * b].decode("utf-16-le", "surrogatepass")
        for a, b in itertools.pairwise(bounds)
    ]


@settings(max_examples=300, deadline=None)
@given(text=ASTRAL, cuts=st.lists(st.integers(0, 80), max_size=12))
def test_text_cut_anywhere_in_utf16_is_joined_back_exactly(text: str, cuts: list[int]) -> None:
    joiner = SurrogateJoiner()
    out = [joiner.feed(piece) for piece in utf16_pieces(text, cuts)]
    assert "".join(out) + joiner.flush() == text
    assert not any(has_surrogate(o) for o in out)  # every piece handed on is well-formed


def test_halves_without_a_partner_become_replacement_characters() -> None:
    joiner = SurrogateJoiner()
    assert joiner.feed("a\udc00b") == "a\ufffdb"  # a low half alone
    assert joiner.feed("\ud83d") == "" and joiner.pending  # a high half waits...
    assert joiner.feed("x") == "\ufffdx"  # ...and has no partner
    assert joiner.feed("\ud83d") == ""
    assert joiner.flush() == "\ufffd" and not joiner.pending
    assert joiner.flush() == ""
