"""Disconnect latency, side by side: how long from the client's close() until the app's
awaiting receive() returns http.disconnect, for Tether, Uvicorn, Hypercorn, Granian and Gunicorn
(its ASGI worker).

    bench/.venv-3.11/bin/python bench/disconnect.py                    # 200 trials per server and scenario
    bench/.venv-3.11/bin/python bench/disconnect.py --quick            # 40 trials
    bench/.venv-3.11/bin/python bench/disconnect.py --servers tether,uvicorn --scenarios idle

Scenarios: ``idle`` (nothing else running); ``load``: background load at about half the
server's own peak, as the disconnect issue specifies (a 2 s wrk -c64 run measures the peak of
this server in this block, then wrk paced by bench/paced.lua keeps about half of it going on
other connections); ``busy``: wrk with 8 unpaced connections, so every server runs flat out. Repetitions are interleaved across servers (A B C D,
A B C D, ...), each server started fresh per block. The app reports "ready" and "gone" over
UDP with CLOCK_MONOTONIC timestamps, which are comparable across processes on one machine.
Results: bench/results/disconnect-py3.X-<time>.json and disconnect-py3.X-latest.md.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import Running, machine  # noqa: E402
from bench.report import command_line, percentile, write_results  # noqa: E402

APP = "bench.apps.disconnect_app:app"
PACED = Path(__file__).resolve().parent / "paced.lua"
SERVERS = ("tether", "uvicorn", "hypercorn", "granian", "gunicorn")


def one_trial(port: int, udp: socket.socket, trial: int, rst: bool) -> float | None:
    """Latency in ms from close() to the app seeing http.disconnect; None if never seen."""
    tag = str(trial).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET /wait?" + tag + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
        if not _await(udp, b"ready " + tag, 5.0):
            return None
        time.sleep(0.002)
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        closed_at = time.monotonic()
        sock.close()
    except OSError:
        sock.close()
        return None
    message = _await(udp, b"gone " + tag + b" ", 3.0)
    if not message:
        return None
    return (float(message.split()[-1]) - closed_at) * 1000


def _await(udp: socket.socket, prefix: bytes, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        udp.settimeout(left)
        try:
            data = udp.recv(256)
        except (socket.timeout, BlockingIOError):
            return None
        if data.startswith(prefix):
            return data
    return None


PACE_SECONDS = 0.010  # bench/paced.lua's delay before each request


def run_block(server: str, trials: int, scenario: str, first_trial: int, load_connections: int) -> dict:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    env = {"BENCH_REPORT_PORT": str(udp.getsockname()[1])}
    latencies: list[float] = []
    missed = 0
    load_rate = peak = None
    with Running(server, APP, env) as srv:
        wrk = None
        if scenario in ("load", "busy"):
            command = ["wrk", "-t1", f"-c{load_connections}", "-d120s", f"{srv.url}/hello"]
            if scenario == "load":
                subprocess.run(["wrk", "-t1", "-c64", "-d1s", f"{srv.url}/hello"], capture_output=True, timeout=60)
                peak = _wrk_rate(subprocess.run(["wrk", "-t1", "-c64", "-d2s", f"{srv.url}/hello"],
                                                capture_output=True, text=True, timeout=60).stdout) or 0.0
                connections = max(2, round(peak / 2 * PACE_SECONDS))
                command = ["wrk", "-t1", f"-c{connections}", "-d120s", "-s", str(PACED), f"{srv.url}/hello"]
            wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(1.0)
        started = time.monotonic()
        try:
            for i in range(trials):
                latency = one_trial(srv.port, udp, first_trial + i, rst=False)
                if latency is None:
                    missed += 1
                else:
                    latencies.append(latency)
        finally:
            if wrk is not None:
                wrk.send_signal(2)  # SIGINT: wrk prints its summary
                out, _ = wrk.communicate(timeout=15)
                load_rate = _wrk_rate(out)
    udp.close()
    return {"latencies_ms": latencies, "missed": missed, "load_rps": load_rate, "peak_rps": peak,
            "seconds": time.monotonic() - started}


def _wrk_rate(output: str) -> float | None:
    for line in output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200, help="trials per server and scenario")
    parser.add_argument("--quick", action="store_true", help="40 trials")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="idle,load,busy")
    parser.add_argument("--blocks", type=int, default=4, help="interleaved blocks the trials are split into")
    parser.add_argument("--load-connections", type=int, default=8, help="wrk connections for the busy scenario")
    args = parser.parse_args(argv)
    trials = 40 if args.quick else args.trials
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    if {"load", "busy"} & set(scenarios) and not shutil.which("wrk"):
        parser.error("the load scenario needs wrk: run bench/setup.sh")
    per_block = max(1, trials // args.blocks)
    raw: dict = {s: {sc: {"latencies_ms": [], "missed": 0, "load_rps": [], "peak_rps": []} for sc in scenarios}
                 for s in servers}
    trial = 0
    for scenario in scenarios:
        for block in range(args.blocks):
            for server in servers:
                result = run_block(server, per_block, scenario, trial, args.load_connections)
                trial += per_block
                entry = raw[server][scenario]
                entry["latencies_ms"] += result["latencies_ms"]
                entry["missed"] += result["missed"]
                if result["load_rps"]:
                    entry["load_rps"].append(result["load_rps"])
                if result["peak_rps"]:
                    entry["peak_rps"].append(result["peak_rps"])
                print(f"{scenario:5} block {block + 1}/{args.blocks} {server:10} "
                      f"p50 {percentile(result['latencies_ms'], 50):7.3f} ms  missed {result['missed']}", flush=True)
    rows = []
    for scenario in scenarios:
        for server in servers:
            entry = raw[server][scenario]
            lat = entry["latencies_ms"]
            rows.append({
                "scenario": scenario, "server": server, "trials": len(lat) + entry["missed"],
                "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": max(lat) if lat else None,
                "missed": entry["missed"],
                "load_rps": statistics.median(entry["load_rps"]) if entry["load_rps"] else None,
                "peak_rps": statistics.median(entry["peak_rps"]) if entry["peak_rps"] else None,
            })
    command = command_line("disconnect.py", argv)
    table = ["| scenario | server | trials | p50 ms | p99 ms | max ms | not seen | background req/s | its peak req/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        def ms(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}"
        table.append(f"| {row['scenario']} | {row['server']} | {row['trials']} | {ms(row['p50_ms'])} | {ms(row['p99_ms'])} "
                     f"| {ms(row['max_ms'])} | {row['missed']} | {row['load_rps'] and round(row['load_rps']) or '—'} "
                     f"| {row['peak_rps'] and round(row['peak_rps']) or '—'} |")
    write_results("disconnect", {"command": command.strip(), "machine": machine(), "rows": rows, "raw": raw},
                  "\n".join(table), command.strip())
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
