"""Every benchmark in one command: set up (bench/setup.sh), then run the selected suites.

    bash bench/run                     # everything, full length (about 40 minutes)
    bash bench/run --quick             # everything, short runs (about 8 minutes)
    bash bench/run --quick hello stream h2-hello ws-echo disconnect-load

Names are suites (throughput, h2, ws, disconnect, scale, slowloris) or single scenarios of a suite
(hello, 64k, echo, stream, close, c1000; h2-hello, h2-64k; ws-echo; disconnect-idle,
disconnect-load, disconnect-busy). Each suite writes bench/results/<suite>-<time>.json and <suite>-latest.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PYTHON = BENCH / ".venv" / "bin" / "python"

# suite -> (script, {scenario name: the suite's own scenario name})
SUITES = {
    "throughput": ("throughput.py", {n: n for n in ("hello", "64k", "echo", "stream", "close", "c1000")}),
    "h2": ("h2.py", {"h2-hello": "hello", "h2-64k": "64k"}),
    "ws": ("ws.py", {"ws-echo": None}),
    "disconnect": ("disconnect.py", {"disconnect-idle": "idle", "disconnect-load": "load", "disconnect-busy": "busy"}),
    "scale": ("scale.py", {}),
    "slowloris": ("slowloris.py", {}),
}


def plan(names: list[str]) -> list[tuple[str, list[str] | None]]:
    """[(suite, scenarios or None for all)] in suite order; ValueError for an unknown name."""
    chosen: dict[str, list[str] | None] = {}
    for name in names or list(SUITES):
        if name in SUITES:
            chosen[name] = None
            continue
        suite = next((s for s, (_, scenarios) in SUITES.items() if name in scenarios), None)
        if suite is None:
            known = sorted([*SUITES, *(n for _, sc in SUITES.values() for n in sc)])
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
        if suite in chosen and chosen[suite] is None:
            continue
        scenario = SUITES[suite][1][name]
        chosen.setdefault(suite, [])
        if scenario is not None:
            chosen[suite].append(scenario)  # type: ignore[union-attr]
        else:
            chosen[suite] = None
    return [(suite, chosen[suite]) for suite in SUITES if suite in chosen]


def command(suite: str, scenarios: list[str] | None, quick: bool) -> list[str]:
    script, _ = SUITES[suite]
    args = [str(PYTHON), str(BENCH / script)]
    if quick:
        args.append("--quick")
    if scenarios:
        args += ["--scenarios", ",".join(scenarios)]
    return args


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if a != "--quick"]
    try:
        steps = plan(names)
    except ValueError as exc:
        print(f"bench/run: {exc}", file=sys.stderr)
        return 2
    subprocess.run(["bash", str(BENCH / "setup.sh")], check=True, timeout=1800)
    failed = []
    for suite, scenarios in steps:
        if not (BENCH / SUITES[suite][0]).exists():
            print(f"== {suite}: {SUITES[suite][0]} missing, skipped", flush=True)
            continue
        print(f"== {suite}", flush=True)
        result = subprocess.run(command(suite, scenarios, quick), cwd=BENCH.parent, timeout=4 * 3600)
        if result.returncode:
            failed.append(suite)
    for suite, _ in steps:
        latest = BENCH / "results" / f"{suite}-latest.md"
        if latest.exists() and suite not in failed:
            print(f"\n## {suite}\n\n{latest.read_text()}")
    if failed:
        print(f"bench/run: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
