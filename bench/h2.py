"""HTTP/2 (h2c, prior knowledge) throughput, side by side: Tether, Granian, Gunicorn (its ASGI worker)
and Hypercorn, with h2load.

    bash bench/setup.sh                         # once: bench/.venv-3.X (python3's 3.X), pinned servers
    bench/.venv-3.11/bin/python bench/h2.py       # hello and 64 KiB, 3 interleaved repetitions of 10 s
    bench/.venv-3.11/bin/python bench/h2.py --quick --scenarios hello

h2load -c 64 -m 10 (64 connections, 10 concurrent streams each), after a warm-up, every server
started fresh with one worker on bench/apps/throughput_app.py. The headline is Tether's median
÷ each other server's median in the same run. Results: bench/results/h2-py3.X-<time>.json and
h2-py3.X-latest.md.

``--scenarios large-body``: one 32 MiB response body (a single send(), fetched by curl, whose
HTTP/2 windows are large) three times in a row while 16 connections do hello (h2load -c 16 -m 1,
per-request log): the hello p99 and max while the bodies are being sent, against the same
connections' p99 with no body in flight, and how long each 32 MiB body took.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import command_line, percentile, write_results  # noqa: E402
from bench.servers import Running, machine  # noqa: E402
from bench.throughput import markdown  # noqa: E402

APP = "bench.apps.throughput_app:app"
SERVERS = ("tether", "granian", "granian-st", "gunicorn", "hypercorn")
SCENARIOS = {"hello": "/hello", "64k": "/64k", "large-body": "/32m"}
# Granian serves h2c with prior knowledge only with --http 2 (its auto mode is HTTP/1.1 in clear);
# Gunicorn only with h2 in --http-protocols and --http2-cleartext prior-knowledge (by default: HTTP/1.1).
_GRANIAN_H2 = {"GRANIAN_HTTP": "2"}
H2_ENV = {"granian": _GRANIAN_H2, "granian-st": _GRANIAN_H2,
          "gunicorn": {"GUNICORN_CMD_ARGS": "--http-protocols h2 --http2-cleartext prior-knowledge"}}


def parse_h2load(output: str) -> dict:
    """Requests/s and failures from h2load's summary."""
    result: dict = {"rps": None, "p99_ms": None, "errors": 0}
    for line in output.splitlines():
        line = line.strip()
        match = re.match(r"^finished in [\d.]+m?s, ([\d.]+) req/s", line)
        if match:
            result["rps"] = float(match.group(1))
        match = re.match(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", line)
        if match:  # ("failed" includes the errored, timed-out and non-2xx ones)
            result["errors"] += int(match.group(5))
    return result


def run_h2load(url: str, seconds: float, warmup: float) -> dict:
    # (h2load takes whole seconds only: "-D 6.0" is a value error)
    cmd = ["h2load", "-c", "64", "-m", "10", "-t", "1", "-D", str(max(1, round(seconds))),
           "--warm-up-time", str(max(1, round(warmup))), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60)
    result = parse_h2load(done.stdout)
    if result["rps"] is None:
        raise RuntimeError(f"h2load gave no result: {(done.stderr or done.stdout).strip()[-300:]}")
    return result


def measure(server: str, scenario: str, seconds: float, warmup: float) -> dict:
    with Running(server, APP, env=H2_ENV.get(server)) as srv:
        if scenario == "large-body":
            return large_body(srv.url, seconds)
        return run_h2load(srv.url + SCENARIOS[scenario], seconds, warmup)


def large_body(url: str, seconds: float, bodies: int = 3) -> dict:
    """Hello latencies on 16 other connections while one 32 MiB body goes out (module docstring)."""
    seconds = max(4, round(seconds))
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        load = subprocess.Popen(["h2load", "-c", "16", "-m", "1", "-t", "1", "-D", str(seconds), "--log-file", log.name,
                                 url + "/hello"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        windows: list[tuple[float, float]] = []
        time.sleep(1.0)  # (a second of hello alone: the baseline)
        for _ in range(bodies):
            started = time.time()
            done = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{size_download}",
                                   "--max-time", "120", url + "/32m"], capture_output=True, text=True, timeout=150)
            windows.append((started, time.time()))
            if done.stdout.strip() != str(32 * 1024 * 1024):
                raise RuntimeError(f"the 32 MiB body came short: {done.stdout!r} {done.stderr[-200:]!r}")
        load.communicate(timeout=seconds + 150)
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines() if line.strip()]
    during, alone = [], []
    for start_us, status, duration_us in rows:
        start, duration = int(start_us) / 1e6, int(duration_us) / 1e3
        (during if any(a <= start <= b for a, b in windows) else alone).append(duration)
    return {"rps": len(rows) / seconds, "errors": sum(1 for r in rows if r[1] != "200"),
            "p99_during_ms": percentile(during, 99), "max_during_ms": max(during) if during else None,
            "p99_alone_ms": percentile(alone, 99), "requests_during": len(during),
            "body_seconds": [round(b - a, 3) for a, b in windows]}


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
            rows.append({
                "scenario": scenario, "server": server, "median_rps": median,
                "spread_pct": (max(rps) - min(rps)) / median * 100 if median else 0.0, "runs": rps, "p99_ms": None,
                "errors": sum(r["errors"] for r in runs),
                "tether_ratio": medians["tether"] / median if "tether" in medians and median else None,
            })
    return rows


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
                result = measure(server, scenario, args.seconds, args.warmup)
                samples[scenario].setdefault(server, []).append(result)
                print(f"h2 {scenario:6} rep {rep + 1}/{args.repeat} {server:11} {result['rps'] or 0:10.0f} req/s "
                      f"errors {result['errors']}", flush=True)
    large = samples.pop("large-body", None)
    rows = summarise(samples)
    table = markdown(rows) if rows else ""
    if large:
        table += ("\n" if table else "") + large_body_table(large)
        samples["large-body"] = large
    command = command_line("h2.py", argv)
    write_results("h2", {"command": command.strip(), "machine": machine(), "rows": rows, "samples": samples},
                  table, command.strip())
    print(table)
    return 0


def large_body_table(per_server: dict) -> str:
    lines = ["| server | hello p99 during 32 MiB bodies (ms) | max (ms) | p99 with none (ms) | seconds per body |",
             "|---|---|---|---|---|"]
    for server, runs in per_server.items():
        during = statistics.median([r["p99_during_ms"] for r in runs if r["p99_during_ms"] is not None] or [0])
        peak = max((r["max_during_ms"] or 0) for r in runs)
        alone = statistics.median([r["p99_alone_ms"] for r in runs if r["p99_alone_ms"] is not None] or [0])
        bodies = statistics.median([s for r in runs for s in r["body_seconds"]])
        lines.append(f"| {server} | {during:.1f} | {peak:.1f} | {alone:.1f} | {bodies:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
