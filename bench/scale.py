"""Scale, side by side: memory per waiting request, and 1,000 clients closing at once.

    bench/.venv-3.11/bin/python bench/scale.py                      # 5,000 waiting requests, 1,000 closes, all servers
    bench/.venv-3.11/bin/python bench/scale.py --quick              # 1,000 waiting, 200 closes
    bench/.venv-3.11/bin/python bench/scale.py --servers tether,uvicorn

For each server: open N connections, each with a request whose app awaits receive() after the
body (a long-poll that waits for the disconnect); measure the server's RSS before and after
(kB per waiting request); then close K of them as fast as the client can and measure how long
after the end of the close loop the app has seen the last of the K disconnects.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import command_line, percentile, write_results  # noqa: E402
from bench.servers import Running, machine  # noqa: E402

APP = "bench.apps.disconnect_app:app"


def rss_kb(pid: int) -> int:
    """Resident memory of pid and its children (Granian runs its worker as a child)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def measure(server: str, waiting: int, closing: int) -> dict:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
    except OSError:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    env = {"BENCH_REPORT_PORT": str(udp.getsockname()[1])}
    with Running(server, APP, env) as srv:
        # Warm up the code paths, so that RSS growth is the connections, not first-use imports.
        warm = [_open(srv.port, i) for i in range(50)]
        _collect(udp, b"ready", 50, 10)
        for sock in warm:
            sock.close()
        _collect(udp, b"gone", 50, 5)
        time.sleep(0.5)
        before = rss_kb(srv.proc.pid)
        socks = []
        for i in range(waiting):
            socks.append(_open(srv.port, 1000 + i))
        ready = _collect(udp, b"ready", waiting, 60)
        time.sleep(1.0)
        after = rss_kb(srv.proc.pid)
        victims, keep = socks[:closing], socks[closing:]
        start = time.monotonic()
        for sock in victims:
            sock.close()
        loop_end = time.monotonic()
        gone = _collect(udp, b"gone", closing, 10)
        stamps = sorted(float(message.split()[-1]) for message in gone)
        for sock in keep:
            sock.close()
    udp.close()
    return {
        "server": server,
        "waiting": len(ready),
        "kb_per_request": (after - before) / max(1, len(ready)),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "close_loop_ms": (loop_end - start) * 1000,
        "seen": len(stamps),
        "last_seen_after_loop_ms": (stamps[-1] - loop_end) * 1000 if stamps else None,
        "p50_after_close_start_ms": percentile([(s - start) * 1000 for s in stamps], 50),
    }


def _open(port: int, trial: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /wait?%d HTTP/1.1\r\nHost: bench\r\n\r\n" % trial)
    return sock


def _collect(udp: socket.socket, prefix: bytes, count: int, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            data = udp.recv(256)
        except socket.timeout:
            continue
        if data.startswith(prefix):
            got.append(data)
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=5000)
    parser.add_argument("--closing", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--servers", default="tether,uvicorn,hypercorn,granian,gunicorn")
    args = parser.parse_args(argv)
    if args.quick:
        args.waiting, args.closing = 1000, 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # inherited by the servers
    rows = []
    for server in [s for s in args.servers.split(",") if s]:
        try:
            row = measure(server, args.waiting, args.closing)
        except (OSError, RuntimeError) as exc:  # a server that cannot hold the load is a result too
            print(f"{server}: failed: {exc!r}", flush=True)
            continue
        rows.append(row)
        print(row, flush=True)
    table = ["| server | waiting requests | kB per waiting request | closes | close loop ms | all seen, ms after loop |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        last = "—" if r["last_seen_after_loop_ms"] is None else f"{r['last_seen_after_loop_ms']:.1f}"
        table.append(f"| {r['server']} | {r['waiting']} | {r['kb_per_request']:.1f} | {r['seen']}/{args.closing} "
                     f"| {r['close_loop_ms']:.1f} | {last} |")
    command = command_line("scale.py", argv)
    write_results("scale", {"command": command.strip(), "machine": machine(), "rows": rows}, "\n".join(table), command.strip())
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
