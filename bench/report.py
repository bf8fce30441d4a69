"""Result files and the small statistics the benchmarks share (unit-tested in tests/test_bench_report.py)."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def interpreter() -> str:
    """The interpreter every server of this run runs on, as results name it: "CPython 3.13.0"."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def interpreter_tag() -> str:
    """Its short name in result file names: "py3.13"."""
    return "py%d.%d" % sys.version_info[:2]


def command_line(script: str, argv: list[str] | None) -> str:
    """How this run was started: "bench/.venv-3.13/bin/python bench/ws.py --quick"."""
    python = sys.executable
    if python.startswith(str(ROOT) + os.sep):
        python = os.path.relpath(python, ROOT)
    args = argv if argv is not None else sys.argv[1:]
    return " ".join([python, f"bench/{script}", *args])


def write_results(name: str, data: dict, table: str, command: str, directory: Path = RESULTS) -> Path:
    """Write <name>-py3.X-<time>.json and <name>-py3.X-latest.md (the command and the interpreter,
    then the table): runs on different interpreters keep their own files."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = interpreter_tag()
    data = {"name": name, "time": stamp, "interpreter": interpreter(), **data}
    path = directory / f"{name}-{tag}-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    (directory / f"{name}-{tag}-latest.md").write_text(
        f"Produced by `{command}` on {stamp}, every server on {interpreter()}.\n\n{table}\n")
    return path
