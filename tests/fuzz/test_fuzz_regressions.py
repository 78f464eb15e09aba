"""Replays the fuzzer's seed corpus and every crash it saved through the same checks (no atheris).

`fuzz_decoders.py` saves a crashing input in ``tests/fuzz/regressions/``; it fails here until
the bug is fixed. Inputs worth a name are also kept below as literals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import check

HERE = Path(__file__).resolve().parent
INPUTS = sorted(
    path
    for folder in (HERE / "corpus", HERE / "regressions")
    if folder.is_dir()
    for path in folder.iterdir()
    if path.is_file()
)


def test_seed_corpus_is_there() -> None:
    assert len([p for p in INPUTS if p.parent.name == "corpus"]) >= 5


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_saved_input_passes_the_fuzz_checks(path: Path) -> None:
    check(path.read_bytes())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x00\x00data: x\r", id="cr-at-eof"),
        pytest.param(b"\x00\x00\x00\xef\xbb", id="partial-bom-at-eof"),
        pytest.param(b"\x01\x00\x00data: \xf0\x9f\x98\n\n", id="truncated-utf8-limit-7"),
        pytest.param(b"\x00\xff\xffretry: \xd9\xa3\n\nid: a\x00b\ndata:\n\n", id="unicode-digit"),
    ],
)
def test_named_input_passes_the_fuzz_checks(data: bytes) -> None:
    check(data)
