"""Result files and the small statistics the benchmarks share (unit-tested in tests/test_bench_report.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def write_results(name: str, data: dict, table: str, command: str, directory: Path = RESULTS) -> Path:
    """Write <name>-<time>.json and <name>-latest.md (the command, then the table)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = {"name": name, "time": stamp, **data}
    path = directory / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    (directory / f"{name}-latest.md").write_text(f"Produced by `{command}` on {stamp}.\n\n{table}\n")
    return path
