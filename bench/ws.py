"""WebSocket echo throughput, side by side: Tether, Uvicorn (websockets), Granian, Gunicorn (its ASGI
worker), Hypercorn.

    bash bench/setup.sh                         # once: bench/.venv-3.X (python3's 3.X), pinned servers
    bench/.venv-3.11/bin/python bench/ws.py           # 3 interleaved repetitions of 10 s
    bench/.venv-3.11/bin/python bench/ws.py --quick --servers tether,uvicorn

64 connections, each keeping one 32-byte text message in flight (send, wait for the echo, send
again), driven by bench/ws_load.py; every server started fresh with one worker on
bench/apps/ws_app.py. "ws-limit" is a bare uvloop echo protocol (no ASGI): the ceiling,
and the proof that the client is not the bottleneck. The headline is Tether's median messages/s
÷ each other server's, in the same run. Results: bench/results/ws-py3.X-<time>.json,
ws-py3.X-latest.md (3.X: the interpreter every server ran on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import command_line, write_results  # noqa: E402
from bench.servers import BENCH, Running, machine, python  # noqa: E402

APP = "bench.apps.ws_app:app"
SERVERS = ("tether", "uvicorn", "granian", "gunicorn", "hypercorn", "ws-limit")


def run_client(port: int, connections: int, seconds: float) -> dict:
    cmd = [python(), str(BENCH / "ws_load.py"), str(port), str(connections), str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return parse_client(out.stdout)


def parse_client(output: str) -> dict:
    """The client's JSON line, or a failed run (rate None) if there is none."""
    for line in reversed(output.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        return {"rate": data["rate"], "errors": data["errors"] + max(0, data.get("lost_early", 0))}
    return {"rate": None, "errors": 1}


def measure(server: str, connections: int, seconds: float, warmup: float) -> dict:
    with Running(server, APP) as srv:
        run_client(srv.port, connections, warmup)
        return run_client(srv.port, connections, seconds)


def summarise(samples: dict) -> list[dict]:
    medians = {s: statistics.median([r["rate"] for r in runs if r["rate"]]) for s, runs in samples.items()
               if any(r["rate"] for r in runs)}
    rows = []
    for server, runs in samples.items():
        rates = [r["rate"] for r in runs if r["rate"]]
        if not rates:
            continue
        median = statistics.median(rates)
        rows.append({"server": server, "median": median, "runs": rates,
                     "spread_pct": (max(rates) - min(rates)) / median * 100 if median else 0.0,
                     "errors": sum(r["errors"] for r in runs),
                     "tether_ratio": medians["tether"] / median if "tether" in medians and median else None})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| server | median messages/s | spread | errors | Tether ÷ this |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r["tether_ratio"] is None or r["server"] == "tether" else f"{r['tether_ratio']:.2f}×"
        lines.append(f"| {r['server']} | {r['median']:.0f} | ±{r['spread_pct'] / 2:.0f}% | {r['errors']} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 1 s warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 3, 1
    servers = [s for s in args.servers.split(",") if s]
    samples: dict = {}
    for rep in range(args.repeat):
        for server in servers:
            result = measure(server, args.connections, args.seconds, args.warmup)
            samples.setdefault(server, []).append(result)
            print(f"ws-echo rep {rep + 1}/{args.repeat} {server:10} {result['rate'] or 0:10.0f} messages/s "
                  f"errors {result['errors']}", flush=True)
    rows = summarise(samples)
    table = markdown(rows)
    command = command_line("ws.py", argv)
    write_results("ws", {"command": command, "machine": machine(), "rows": rows, "samples": samples}, table, command)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
