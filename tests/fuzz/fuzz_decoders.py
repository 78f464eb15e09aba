"""Fuzz the sans-I/O decoders with atheris (libFuzzer): ``make fuzz FUZZ_SECONDS=600``.

Not a pytest module (pytest collects ``test_*.py`` only). The properties live in `targets.py`
and are replayed by ``test_fuzz_regressions.py`` on the seed corpus and on every saved crash.

    .venv/bin/python -m pip install atheris          # not a project dependency
    .venv/bin/python tests/fuzz/fuzz_decoders.py -max_total_time=600 tests/fuzz/corpus

libFuzzer writes new inputs into the first corpus directory it is given. So that a run does not
fill the checked-in seed corpus, new inputs go to ``$AISTREAM_FUZZ_WORK`` (default
``~/.cache/aistream-fuzz``), given first; crashes are saved in ``tests/fuzz/regressions/``, where
the regression test replays them: a crash fails ``make test`` until it is fixed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (ROOT / "tests" / "fuzz" / "corpus").resolve()
REGRESSIONS = ROOT / "tests" / "fuzz" / "regressions"
sys.path.insert(0, str(ROOT))

# Instrument aistream and the checks (not httpx, pydantic, ...: `include` filters them out).
with atheris.instrument_imports(include=["aistream", "tests.fuzz"]):
    from tests.fuzz.targets import check


def fuzz_one_input(data: bytes) -> None:
    check(data)


def arguments(argv: list[str]) -> list[str]:
    """`argv` with a work directory before the seed corpus and crashes saved as regressions."""
    work = Path(os.environ.get("AISTREAM_FUZZ_WORK", Path.home() / ".cache" / "aistream-fuzz"))
    out = [argv[0]]
    if not any(arg.startswith("-artifact_prefix=") for arg in argv):
        REGRESSIONS.mkdir(exist_ok=True)
        out.append(f"-artifact_prefix={REGRESSIONS}/")
    dirs = [arg for arg in argv[1:] if not arg.startswith("-")]
    if any(Path(d).resolve() == SEEDS for d in dirs):
        work.mkdir(parents=True, exist_ok=True)
        out.append(str(work))
    return out + argv[1:]


if __name__ == "__main__":
    atheris.Setup(arguments(sys.argv), fuzz_one_input)
    atheris.Fuzz()
