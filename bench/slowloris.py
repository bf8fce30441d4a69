"""Slowloris, side by side: normal clients' latency while 1,000 connections trickle headers.

    bench/.venv-3.11/bin/python bench/slowloris.py                        # 1,000 slow connections, 10 s per phase
    bench/.venv-3.11/bin/python bench/slowloris.py --quick                # 300 slow connections, 4 s per phase
    bench/.venv-3.11/bin/python bench/slowloris.py --servers tether,uvicorn

For each server (fresh, one worker, the throughput app): wrk -c16 on /hello gives the baseline
p99; then N clients open connections and send one header byte every 0.5 s, never finishing
(reconnecting when cut); wrk runs again beside them. The headline is p99 under attack ÷
baseline p99 (target for Tether: ≤ 2×), and how many slow connections the server cut.
Results: bench/results/slowloris-py3.X-<time>.json and slowloris-py3.X-latest.md.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import command_line, write_results  # noqa: E402
from bench.servers import Running, machine  # noqa: E402
from bench.throughput import parse_wrk, wrk_duration  # noqa: E402

APP = "bench.apps.throughput_app:app"
SERVERS = ("tether", "uvicorn", "granian", "gunicorn", "hypercorn")


class Trickle:
    """N connections that each send one more header byte every ``interval`` seconds."""

    def __init__(self, port: int, count: int, interval: float = 0.5) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.cut = 0  # connections the server closed on us
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return None
        sock.setblocking(False)
        self.opened += 1
        try:
            sock.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            pass
        return sock

    def _run(self) -> None:
        sockets = [s for s in (self._connect() for _ in range(self.count)) if s is not None]
        while not self.stop.wait(self.interval):
            for i, sock in enumerate(sockets):
                try:
                    sock.send(b"X")
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    self.cut += 1
                    sock.close()
                    replacement = self._connect()
                    if replacement is not None:
                        sockets[i] = replacement
        for sock in sockets:
            sock.close()

    def __enter__(self) -> "Trickle":
        self.thread.start()
        time.sleep(2.0)  # all connected and trickling
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def run_wrk(url: str, seconds: float) -> dict:
    cmd = ["wrk", "-t1", "-c16", wrk_duration(seconds), "--latency", "--timeout", "5s", url]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout)


def measure(server: str, slow: int, seconds: float) -> dict:
    with Running(server, APP) as srv:
        run_wrk(srv.url + "/hello", 1)  # warm-up
        baseline = run_wrk(srv.url + "/hello", seconds)
        with Trickle(srv.port, slow) as trickle:
            attacked = run_wrk(srv.url + "/hello", seconds)
        return {"server": server, "baseline": baseline, "attacked": attacked, "slow_opened": trickle.opened,
                "slow_cut": trickle.cut}


def markdown(rows: list[dict]) -> str:
    lines = ["| server | baseline req/s | baseline p99 ms | under attack req/s | under attack p99 ms | p99 ratio "
             "| slow connections opened | cut by the server |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["baseline"], r["attacked"]
        ratio = a["p99_ms"] / b["p99_ms"] if a["p99_ms"] and b["p99_ms"] else None
        lines.append(f"| {r['server']} | {b['rps'] or 0:.0f} | {b['p99_ms'] or 0:.2f} | {a['rps'] or 0:.0f} "
                     f"| {a['p99_ms'] or 0:.2f} | {'—' if ratio is None else f'{ratio:.2f}×'} "
                     f"| {r['slow_opened']} | {r['slow_cut']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--slow", type=int, default=1000, help="slow connections")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--quick", action="store_true", help="300 slow connections, 4 s phases")
    args = parser.parse_args(argv)
    if args.quick:
        args.slow, args.seconds = 300, 4
    rows = []
    for server in args.servers.split(","):
        row = measure(server, args.slow, args.seconds)
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    command = command_line("slowloris.py", argv)
    write_results("slowloris", {"command": command, "machine": machine(), "rows": rows}, table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
