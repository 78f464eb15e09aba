"""Statistics and printing: one table per mode, median (min–max), ratios, TARGET lines."""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), nearest rank."""
    if not values:
        return math.nan
    data = sorted(values)
    rank = max(0, min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1))
    return data[rank]


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min–max)``."""
    if not values:
        return "n/a"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def paired_ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of value / baseline of the same round: cancels slow drifts."""
    return median(v / b for v, b in zip(values, baseline, strict=True) if b)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        widths = [len(h) for h in self.header]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        lines = [f"== {self.title} =="]

        def fmt(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        lines.append(fmt(self.header))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(fmt(row) for row in self.rows)
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass
class Target:
    number: int
    text: str
    passed: bool | None  # None: not measured in this run
    detail: str

    def render(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"TARGET {self.number} {verdict}: {self.text} — {self.detail}"


@dataclass
class Report:
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, table: Table) -> None:
        self.tables.append(table)
        print(table.render(), flush=True)
        print(flush=True)

    def target(self, target: Target) -> None:
        self.targets.append(target)
        print(target.render(), flush=True)
        print(flush=True)

    def summary(self) -> str:
        lines = ["== targets =="]
        lines += [t.render() for t in sorted(self.targets, key=lambda t: t.number)]
        return "\n".join(lines)

    def save(self, path: Path) -> None:
        out = {
            "machine": machine(),
            "tables": [asdict(t) for t in self.tables],
            "targets": [asdict(t) for t in self.targets],
            "data": self.data,
        }
        path.write_text(json.dumps(out, indent=1, default=str))


def machine() -> dict[str, Any]:
    """CPU model, cores, Python and the versions that matter."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in (
        "httpx",
        "httpcore",
        "h11",
        "httpx2",
        "httpx-sse",
        "openai",
        "anthropic",
        "pyee",
        "pydantic",
        "starlette",
        "sse-starlette",
        "uvicorn",
        "uvloop",
        "orjson",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "-"
    import os

    cores = os.cpu_count()
    return {
        "cpu": model,
        "cores": cores,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


def machine_line() -> str:
    m = machine()
    v = m["versions"]
    accel = ", ".join(
        f"{name} {v[name]}" if v[name] != "-" else f"{name} not installed"
        for name in ("uvloop", "orjson")
    )
    return (
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; httpx {v['httpx']} "
        f"(httpcore {v['httpcore']}, h11 {v['h11']}), httpx2 {v['httpx2']}, "
        f"httpx-sse {v['httpx-sse']}, openai {v['openai']}, anthropic {v['anthropic']}, "
        f"pyee {v['pyee']}, starlette {v['starlette']}, sse-starlette {v['sse-starlette']}, "
        f"uvicorn {v['uvicorn']}; {accel}"
    )
