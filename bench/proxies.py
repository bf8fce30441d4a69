"""The client leaves the proxy -> the app is told after X ms: nginx, HAProxy and Caddy in front of Tether.

    python3 bench/proxies.py                      # 50 trials per proxy configuration and phase
    python3 bench/proxies.py --trials 10 --setups nginx,Caddy

Runs with the test environment (``bash .ci/setup``: the proxies from Debian, Tether and pytest),
not bench/.venv: the proxy configurations and the trial are tests/proxies.py, the code
tests/test_acceptance_proxies.py asserts the behaviour with. One in-process Tether; each proxy
is started in turn on loopback ports; trials are run one after the other (the figure is a
latency, not a throughput). A case whose first 5 trials all go untold within --patience seconds
is reported as such and not run further (those configurations never tell the app: README says
what ends such requests instead).

Results: bench/results/proxies-py3.X-<time>.json and proxies-py3.X-latest.md (3.X: python3's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # (not bench/: its h2.py would shadow the h2 package Tether imports)

from bench.report import write_results  # noqa: E402
from tests.support.server import serve  # noqa: E402
from tests.proxies import PHASES, SETUPS, Board, hello, measuring_app, trial  # noqa: E402

GIVE_UP_AFTER = 5  # untold trials in a row, from the start of a case, before it is reported as "not told"


def machine() -> dict:
    import platform
    import subprocess

    def version(*command: str) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return {"python": platform.python_version(), "platform": platform.platform(),
            "nginx": version("/usr/sbin/nginx", "-v"), "haproxy": version("/usr/sbin/haproxy", "-v"),
            "caddy": version("/usr/bin/caddy", "version")}


PHASE_TITLES = {"before_response": "before the response", "idle_stream": "quiet stream",
                "active_stream": "busy stream (an event / 100 ms)"}


def render(rows: list[dict], patience: float) -> str:
    """One line per configuration, one column per phase: "median / max ms (told/trials)"."""
    lines = ["| proxy | configuration | " + " | ".join(PHASE_TITLES[p] for p in PHASES) + " |",
             "|---|---|" + "---|" * len(PHASES)]
    for setup in dict.fromkeys(row["setup"] for row in rows):
        cells = []
        for phase in PHASES:
            row = next((r for r in rows if r["setup"] == setup and r["phase"] == phase), None)
            if row is None:
                cells.append("—")
            elif not row["told"]:
                cells.append(f"**not told** (0/{row['trials']} within {patience:g} s)")
            else:
                missed = "" if row["told"] == row["trials"] else f", {row['trials'] - row['told']} not told"
                cells.append(f"{row['median_ms']:.1f} / {row['max_ms']:.1f} ({row['told']}/{row['trials']}{missed})")
        config = next(r["config"] for r in rows if r["setup"] == setup)
        lines.append(f"| {setup} | {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="trials per configuration and phase")
    parser.add_argument("--patience", type=float, default=3.0, help="seconds a trial waits for the app to be told")
    parser.add_argument("--setups", default=",".join(s.name for s in SETUPS), help="configurations (tests/proxies.py)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.setups.split(",") if n.strip()]
    unknown = [n for n in names if n not in {s.name for s in SETUPS}]
    if unknown:
        parser.error(f"unknown setups {unknown}; known: {', '.join(s.name for s in SETUPS)}")
    setups = [s for s in SETUPS if s.name in names]
    rows = []
    board = Board()
    with serve(measuring_app(board, args.patience), lifespan="off", access_log=False) as srv:
        for setup in setups:
            with setup.start(srv.port) as (port, _):
                hello(board, port)
                for phase in PHASES:
                    results: list[float | None] = []
                    for number in range(args.trials):
                        results.append(trial(board, port, phase, args.patience))
                        if number + 1 == GIVE_UP_AFTER and not any(r is not None for r in results):
                            break
                    told = [r for r in results if r is not None]
                    row = {"setup": setup.name, "config": setup.config, "phase": phase, "trials": len(results),
                           "told": len(told), "median_ms": statistics.median(told) if told else None,
                           "max_ms": max(told) if told else None, "raw_ms": results}
                    rows.append(row)
                    print(f"{setup.name:22} {phase:16} told {len(told)}/{len(results)}"
                          + (f"  median {row['median_ms']:.2f} ms  max {row['max_ms']:.2f} ms" if told else ""),
                          flush=True)
    command = "python3 bench/proxies.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = render(rows, args.patience)
    write_results("proxies", {"command": command.strip(), "machine": machine(), "patience": args.patience,
                              "rows": rows}, table, command.strip())
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
