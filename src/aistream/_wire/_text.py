"""Well-formed text from deltas whose JSON ``\\u`` escapes split a character in two. Stdlib only.

JSON can carry a lone UTF-16 surrogate (``"\\ud83d"``), and servers that cut text by UTF-16 units
send an astral character (an emoji) as two deltas, one half each. Python keeps such halves as
lone surrogates, which no UTF-8 encoder accepts: printing the token or sending the history back
would fail. `SurrogateJoiner` holds a trailing high surrogate until the next delta, joins pairs
into their character and replaces a half that has no partner with U+FFFD.
"""

from __future__ import annotations

import re

__all__ = ["SurrogateJoiner", "has_surrogate"]

_SURROGATE = re.compile("[\ud800-\udfff]")
has_surrogate = _SURROGATE.search


class SurrogateJoiner:
    """Joins surrogate halves across the deltas of one stream; `pending` while one is held."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = ""  # a high surrogate that ended the previous delta

    def feed(self, text: str) -> str:
        """`text` as well-formed text, minus a trailing high surrogate kept for the next call."""
        if self.pending:
            text, self.pending = self.pending + text, ""
        if not has_surrogate(text):
            return text
        if "\ud800" <= text[-1] <= "\udbff":
            text, self.pending = text[:-1], text[-1]
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

    def flush(self) -> str:
        """At the end of the stream: U+FFFD for a held half, else ""."""
        held, self.pending = self.pending, ""
        return "\ufffd" if held else ""
