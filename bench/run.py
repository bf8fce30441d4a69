"""Every benchmark in one command: set up (bench/setup.sh), then run the selected suites.

    bash bench/run                     # everything, full length (about 40 minutes), on CPython 3.11
    bash bench/run --quick             # everything, short runs (about 8 minutes)
    bash bench/run --python 3.13 --quick hello stream h2-hello ws-echo disconnect-load

--python 3.X (default 3.11) picks the interpreter: pyenv's newest 3.X.Y, else python3.X on PATH.
bench/setup.sh makes its own virtualenv, bench/.venv-3.X, with Tether and the pinned peers, and
every server of the run, Tether included, runs from it, on that interpreter.
Names are suites (throughput, h2, ws, disconnect, scale, slowloris) or single scenarios of a suite
(hello, 64k, echo, stream, close, c1000; h2-hello, h2-64k, h2-large-body; ws-echo; disconnect-idle,
disconnect-load, disconnect-busy). Each suite writes bench/results/<suite>-py3.X-<time>.json and
<suite>-py3.X-latest.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_PYTHON = "3.11"


def venv_dir(version: str) -> Path:
    """The bench virtualenv of CPython ``version`` ("3.13")."""
    return BENCH / f".venv-{version}"


def find_python(version: str) -> str | None:
    """pyenv's newest CPython ``version``.Y, else python``version`` on PATH (.ci/find-python,
    which CI uses too)."""
    done = subprocess.run(["bash", str(BENCH.parent / ".ci" / "find-python"), version], capture_output=True, text=True,
                          timeout=60)
    path = done.stdout.strip()
    return path if done.returncode == 0 and path else None


# suite -> (script, {scenario name: the suite's own scenario name})
SUITES = {
    "throughput": ("throughput.py", {n: n for n in ("hello", "64k", "echo", "stream", "close", "c1000")}),
    "h2": ("h2.py", {"h2-hello": "hello", "h2-64k": "64k", "h2-large-body": "large-body"}),
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


def command(suite: str, scenarios: list[str] | None, quick: bool, version: str = DEFAULT_PYTHON) -> list[str]:
    script, _ = SUITES[suite]
    args = [str(venv_dir(version) / "bin" / "python"), str(BENCH / script)]
    if quick:
        args.append("--quick")
    if scenarios:
        args += ["--scenarios", ",".join(scenarios)]
    return args


def parse_args(argv: list[str]) -> tuple[bool, str, list[str]]:
    """(quick, python version, names) from bench/run's arguments; ValueError for a bad --python."""
    quick, version, names = False, DEFAULT_PYTHON, []
    args = iter(argv)
    for arg in args:
        if arg == "--quick":
            quick = True
        elif arg == "--python" or arg.startswith("--python="):
            version = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            if not re.fullmatch(r"3\.\d+", version):
                raise ValueError(f"--python wants a version such as 3.13, got {version!r}")
        else:
            names.append(arg)
    return quick, version, names


def main(argv: list[str]) -> int:
    try:
        quick, version, names = parse_args(argv)
        steps = plan(names)
    except ValueError as exc:
        print(f"bench/run: {exc}", file=sys.stderr)
        return 2
    python = find_python(version)
    if python is None:
        print(f"bench/run: no CPython {version} found ($(pyenv root)/versions/{version}.*/bin/python3 or "
              f"python{version} on PATH)", file=sys.stderr)
        return 2
    print(f"== CPython {version}: {python}, virtualenv {os.path.relpath(venv_dir(version), BENCH.parent)}", flush=True)
    subprocess.run(["bash", str(BENCH / "setup.sh"), python, str(venv_dir(version))], check=True, timeout=1800)
    failed = []
    for suite, scenarios in steps:
        if not (BENCH / SUITES[suite][0]).exists():
            print(f"== {suite}: {SUITES[suite][0]} missing, skipped", flush=True)
            continue
        print(f"== {suite}", flush=True)
        result = subprocess.run(command(suite, scenarios, quick, version), cwd=BENCH.parent, timeout=4 * 3600)
        if result.returncode:
            failed.append(suite)
    for suite, _ in steps:
        latest = BENCH / "results" / f"{suite}-py{version}-latest.md"
        if latest.exists() and suite not in failed:
            print(f"\n## {suite}\n\n{latest.read_text()}")
    if failed:
        print(f"bench/run: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
