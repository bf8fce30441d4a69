"""Throughput, side by side: Tether against Uvicorn, Granian, Gunicorn (its ASGI worker), Hypercorn
and a bare limit server.

    bash bench/run --python 3.13 throughput              # once: venv with pinned servers, wrk; then this
    bench/.venv-3.13/bin/python bench/throughput.py      # every scenario, 3 interleaved repetitions
    bench/.venv-3.13/bin/python bench/throughput.py --quick   # 3 s runs
    bench/.venv-3.13/bin/python bench/throughput.py --scenarios hello,64k --servers tether,uvicorn --repeat 5
    bench/.venv-3.13/bin/python bench/throughput.py --scenarios hello --servers tether,tether-metrics --seconds 5   # --metrics' cost

Each measurement starts the server fresh (one worker, same app file), warms it up, then runs
wrk. Repetitions are interleaved across servers (A B C, A B C, ...). The headline is the ratio
of Tether's median to each other server's median *in the same run*: this machine is shared and
its absolute numbers drift. Results: bench/results/throughput-py3.X-<time>.json,
throughput-py3.X-latest.md and throughput-py3.X-latest.png (3.X: the interpreter every server ran on).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import RESULTS, command_line, interpreter, interpreter_tag, write_results  # noqa: E402
from bench.servers import BENCH, Running, machine  # noqa: E402

APP = "bench.apps.throughput_app:app"
SERVERS = ("tether", "uvicorn", "granian", "granian-st", "gunicorn", "hypercorn", "limit")  # (also: tether-metrics)
# name -> (path, wrk connections, extra wrk arguments); the limit server only answers "hello".
SCENARIOS = {
    "hello": ("/hello", 64, []),
    "64k": ("/64k", 64, []),
    "echo": ("/echo", 64, ["-s", str(BENCH / "echo.lua")]),
    "stream": ("/stream", 64, []),
    "close": ("/hello", 64, ["-H", "Connection: close"]),
    "c1000": ("/hello", 1000, []),
}


def parse_wrk(output: str) -> dict:
    """Requests/s, latency percentiles (ms) and errors from `wrk --latency` output."""
    result: dict = {"rps": None, "p50_ms": None, "p99_ms": None, "errors": 0, "requests": None}
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        match = re.match(r"^(\d+) requests in ", line)
        if match:
            result["requests"] = int(match.group(1))
        match = re.match(r"^(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)$", line)
        if match:
            result[f"p{match.group(1)}_ms"] = float(match.group(2)) * units[match.group(3)]
        if line.startswith("Socket errors:"):
            result["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
        if line.startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(line.split(":")[1])
    return result


def wrk_duration(seconds: float) -> str:
    """wrk's -d option: whole seconds only ("-d20.0s" is a usage error that prints no result)."""
    return f"-d{max(1, round(seconds))}s"


def run_wrk(url: str, connections: int, seconds: float, extra: list[str]) -> dict:
    # One wrk thread for every scenario, c1000 included: one drives 126k req/s against the bare
    # limit server here, and a second one, beside a single-threaded server on 2 cores, gave every
    # uvloop server (the limit one too) a p99 of 0.5-2 s and wrk timeouts that -t1 does not show.
    cmd = ["wrk", "-t1", f"-c{connections}", wrk_duration(seconds), "--latency", "--timeout", "5s", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (from /proc; 0.0 elsewhere)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(child) for child in fh.read().split()]
    except (OSError, ValueError, IndexError):
        return total
    return total + sum(cpu_seconds(child) for child in children)


def measure(server: str, scenario: str, seconds: float, warmup: float) -> dict:
    """One wrk run against a fresh server; with the server's CPU microseconds per request, a cost
    that other load on a shared machine disturbs less than the request rate."""
    path, connections, extra = SCENARIOS[scenario]
    with Running(server, APP) as srv:
        run_wrk(srv.url + path, min(connections, 64), warmup, extra)
        before = cpu_seconds(srv.proc.pid)
        result = run_wrk(srv.url + path, connections, seconds, extra)
        used = cpu_seconds(srv.proc.pid) - before
        result["cpu_us_per_request"] = used / result["requests"] * 1e6 if result["requests"] else None
        return result


def summarise(samples: dict) -> list[dict]:
    rows = []
    for scenario, per_server in samples.items():
        medians = {s: statistics.median([r["rps"] for r in runs if r["rps"]]) for s, runs in per_server.items()
                   if any(r["rps"] for r in runs)}
        for server, runs in per_server.items():
            rps = [r["rps"] for r in runs if r["rps"]]
            if not rps:
                continue
            median = statistics.median(rps)
            p99 = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
            cpu = [r["cpu_us_per_request"] for r in runs if r.get("cpu_us_per_request")]
            rows.append({
                "scenario": scenario, "server": server, "median_rps": median,
                "spread_pct": (max(rps) - min(rps)) / median * 100 if median else 0.0,
                "runs": rps, "p99_ms": statistics.median(p99) if p99 else None,
                "cpu_us_per_request": statistics.median(cpu) if cpu else None,
                "errors": sum(r["errors"] for r in runs),
                "tether_ratio": medians["tether"] / median if "tether" in medians and median else None,
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| scenario | server | median req/s | spread | p99 ms | errors | Tether ÷ this |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r["tether_ratio"] is None or r["server"] == "tether" else f"{r['tether_ratio']:.2f}×"
        p99 = "—" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}"
        lines.append(f"| {r['scenario']} | {r['server']} | {r['median_rps']:.0f} | ±{r['spread_pct'] / 2:.0f}% | {p99} "
                     f"| {r['errors']} | {ratio} |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(scenarios)), 4))
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        values = [next((r["median_rps"] for r in rows if r["scenario"] == sc and r["server"] == server), 0) for sc in scenarios]
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=server)
    ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(scenarios))], scenarios)
    ax.set_ylabel("requests/s (median)")
    ax.set_title(f"Throughput, one worker, same machine, same run, {interpreter()}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 1 s warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 3, 1
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    servers = [s for s in args.servers.split(",") if s]
    samples: dict = {sc: {} for sc in scenarios}
    for scenario in scenarios:
        for rep in range(args.repeat):
            for server in servers:
                if server == "limit" and scenario != "hello":
                    continue
                result = measure(server, scenario, args.seconds, args.warmup)
                samples[scenario].setdefault(server, []).append(result)
                cpu = result["cpu_us_per_request"]
                print(f"{scenario:7} rep {rep + 1}/{args.repeat} {server:11} {result['rps'] or 0:10.0f} req/s "
                      f"p99 {result['p99_ms']} ms errors {result['errors']} server CPU "
                      f"{'-' if cpu is None else f'{cpu:.1f}'} us/request", flush=True)
    rows = summarise(samples)
    table = markdown(rows)
    command = command_line("throughput.py", argv)
    # (a before/after run of other checkouts keeps its own files: it is not the peers' table)
    name = "throughput-variants" if any(s.startswith("tether@") for s in servers) else "throughput"
    write_results(name, {"command": command.strip(), "machine": machine(), "rows": rows, "samples": samples},
                  table, command.strip())
    if name == "throughput":
        chart(rows, RESULTS / f"throughput-{interpreter_tag()}-latest.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
