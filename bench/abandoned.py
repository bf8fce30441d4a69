"""What runs on after the client leaves, on real stacks, side by side (issue 14).

    bash bench/setup.sh                                 # once: bench/.venv-3.X (python3's 3.X), servers, stacks
    bench/.venv-3.11/bin/python bench/abandoned.py      # every stack, every server (about 12 minutes)
    bench/.venv-3.11/bin/python bench/abandoned.py --servers tether-cancel,uvicorn --stacks sqla-asyncpg,cpu

For each stack of tests/apps/stacks (tests/stacks.py ``STACKS``) and each server, one request is
sent over a raw socket and its client closes the socket 300 ms later; the figure is the seconds
the abandoned work ran on after that: the query's presence in pg_stat_activity (polled every
10 ms, by application_name and request id), the CPU loop's or sqlite3 query's recorded end, the
SSE generator's ``finally``. "> N s" means still running when the measurement stopped (its
query was 20 s long). Then three scenarios per server:

* 110 abandoned `def` requests 10 ms apart (psycopg 3, a connection each): peak threads of the
  server, peak PostgreSQL connections, and the status of a normal request afterwards;
* the psycopg 3 early-cancel race: 40 clients leaving 0-3 ms around the moment the query is
  sent (AsyncConnectionPool): how many queries still run 1 s after the last client left (under
  Tether cancel or Gunicorn with grace 0, these escaped the cancel and run their full 20 s;
  under Gunicorn's default grace they are not cancelled yet);
* Django: 10 abandoned requests on the sync view (2 s queries, CONN_MAX_AGE 0): connections left
  open once they are over.

Servers: Tether (notify; cancel with grace 0), Uvicorn, Granian, and Gunicorn 27's ``-k asgi``
worker with its default ``--asgi-disconnect-grace-period`` (3 s) and with 0. Each runs one
worker from the bench venv it runs in. PostgreSQL is a throwaway cluster (max_connections 100).
Results: bench/results/abandoned-py3.X-<time>.json and abandoned-py3.X-latest.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # (not bench/: its h2.py would shadow the h2 package Tether imports)

from bench.report import command_line, write_results  # noqa: E402
from bench.servers import VENV_BIN, _bin, machine  # noqa: E402
from tests.stacks import (  # noqa: E402
    STACKS, Activity, Events, PgMonitor, Run, ServerProcess, abandon_many_at_once, bad_output, early_leaves,
    many_abandoned, stack_env,
)
from tests.support.components import postgres_cluster  # noqa: E402

SERVERS = ("tether-notify", "tether-cancel", "uvicorn", "granian", "gunicorn", "gunicorn-grace0")
# The stacks measured (cpu-optin: the CPU loop inside tether.interruptible(), a no-op under other servers).
BENCH_STACKS = list(STACKS)
ALONE = ("sqlite",)  # CPU-bound and row-count-bound: measured alone, so that contention does not lengthen it
HOST = "127.0.0.1"


def command(server: str, app: str) -> tuple[list[str], object]:
    """(command without the port, function giving the port arguments) for one server and app.
    Gunicorn is started here with this benchmark's own options (--graceful-timeout 1, the grace-0 variant)."""
    if server.startswith("tether"):
        policy = server.split("-", 1)[1]
        cmd = [_bin("tether"), app, "--host", HOST, "--no-access-log", "--log-level", "warning",
               "--on-disconnect", policy, "--disconnect-grace", "0", "--timeout-graceful-shutdown", "1"]
        return cmd, lambda port: ["--port", str(port)]
    if server == "uvicorn":
        cmd = [_bin("uvicorn"), app, "--host", HOST, "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--log-level", "warning", "--timeout-graceful-shutdown", "1"]
        return cmd, lambda port: ["--port", str(port)]
    if server == "granian":
        cmd = [_bin("granian"), "--interface", "asgi", "--host", HOST, "--workers", "1", "--log-level", "warning", app]
        return cmd, lambda port: ["--port", str(port)]
    if server.startswith("gunicorn"):
        cmd = [_bin("gunicorn"), "-k", "asgi", "-w", "1", "--log-level", "warning", "--graceful-timeout", "1", app]
        if server == "gunicorn-grace0":
            cmd += ["--asgi-disconnect-grace-period", "0"]
        return cmd, lambda port: ["-b", f"{HOST}:{port}"]
    raise ValueError(f"unknown server {server!r}")


def run_stacks(pg, server: str, keys: list[str], limit: float) -> list[dict]:  # type: ignore[no-untyped-def]
    """One abandoned request per stack, all stacks at once, on ``server``."""
    stacks = [STACKS[k] for k in keys]
    if not stacks:
        return []
    port_args = command(server, stacks[0].app)[1]
    with Run(pg, stacks, lambda s: command(server, s.app)[0], port_args=port_args) as run:  # type: ignore[arg-type]
        served = run.abandon_all(limit)
        rows = []
        for key, s in served.items():
            r = s.result
            rows.append({"stack": key, "server": server, "started": r.started is not None, "ran_on": r.ran_on,
                         "limit": limit, "detail": r.detail, "error_lines": len(bad_output(s.output)),
                         "warnings": s.warnings[:5]})
        return rows


class One:
    """One stack on one server, for the scenarios."""

    def __init__(self, pg, server: str, key: str, workdir: Path) -> None:  # type: ignore[no-untyped-def]
        self.stack = STACKS[key]
        self.monitor = PgMonitor(pg)
        self.events = Events(workdir / f"{server}-{key}.events")
        cmd, port_args = command(server, self.stack.app)
        self.server = ServerProcess(cmd, stack_env(pg, self.events.path), workdir / f"{server}-{key}.log",
                                    port_args=port_args)  # type: ignore[arg-type]
        self.activity = Activity(self.monitor)

    def __enter__(self) -> "One":
        self.activity.__enter__()
        try:
            self.server.wait_ready()
            status, body = self.server.get(self.stack.ok_path)
            if status != 200:
                raise RuntimeError(f"{self.stack.ok_path}: {status} {body[:200]!r}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.activity.__exit__()
        self.monitor.terminate()
        self.monitor.close()


def scenarios(pg, server: str, workdir: Path) -> dict:  # type: ignore[no-untyped-def]
    out: dict = {}
    with One(pg, server, "psycopg-sync", workdir) as one:
        out["many_def"] = many_abandoned(one.server, one.stack, one.activity, count=110, spacing=0.010)
    with One(pg, server, "psycopg-pool", workdir) as one:
        result = early_leaves(one.server, one.stack, one.activity, one.events, count=40, aimed=True)
        result.pop("escaped_ids")
        out["early_leaves"] = result
    with One(pg, server, "django-sync", workdir) as one:
        abandoned = abandon_many_at_once(one.server, one.stack, one.events, 10, seconds=2, activity=one.activity)
        one.activity.wait_for(lambda: all(one.activity.gone_at.get(a.rid) for a in abandoned), 25.0)
        time.sleep(1.0)  # request_finished closes the connection right after the view returns
        states = one.monitor.backends(one.stack.app_name)
        out["django_leaks"] = {"requests": len(abandoned), "started": sum(1 for a in abandoned if a.started),
                               "left_open": sum(states.values()), "states": dict(states),
                               "error_lines": len(bad_output(one.server.output()))}
    return out


def seconds_cell(row: dict | None) -> str:
    if row is None:
        return "—"
    if not row["started"]:
        return "not started"
    if row["ran_on"] is None:
        return f"> {row['limit']:.0f} s"
    text = f"{row['ran_on']:.2f} s" if row["ran_on"] < 10 else f"{row['ran_on']:.1f} s"
    return text + (f" ({row['error_lines']} error lines)" if row["error_lines"] else "")


def markdown(rows: list[dict], extra: dict, servers: list[str]) -> str:
    head = "| stack | " + " | ".join(servers) + " |"
    lines = [head, "|---|" + "---|" * len(servers)]
    by = {(r["stack"], r["server"]): r for r in rows}
    for key in dict.fromkeys(r["stack"] for r in rows):
        lines.append(f"| {STACKS[key].title} | " + " | ".join(seconds_cell(by.get((key, s))) for s in servers) + " |")

    def cell(server: str, name: str, fmt) -> str:  # type: ignore[no-untyped-def]
        value = extra.get(server, {}).get(name)
        return "—" if value is None else fmt(value)

    lines.append("| 110 abandoned `def` requests 10 ms apart: peak threads / PG connections, next request | "
                 + " | ".join(cell(s, "many_def", lambda v: f"{v['peak_threads'] - v['baseline_threads']} / "
                                   f"{v['peak_backends']}, {v['next_status']}") for s in servers) + " |")
    lines.append("| psycopg 3 early leaves (40, 0-3 ms around the send): queries still running 1 s after the last leave | "
                 + " | ".join(cell(s, "early_leaves", lambda v: f"{v['escaped']} of {v['queries_started']} started")
                              for s in servers) + " |")
    lines.append("| Django sync view, 10 abandoned 2 s queries: connections left open | "
                 + " | ".join(cell(s, "django_leaks", lambda v: f"{v['left_open']}/{v['requests']}"
                                   + (f" ({v['error_lines']} error lines)" if v["error_lines"] else ""))
                              for s in servers) + " |")
    return "\n".join(lines)


def stack_versions() -> dict:
    python = VENV_BIN / "python"
    if not python.exists():
        return {}
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                         timeout=60).stdout
    wanted = {"gunicorn", "fastapi", "starlette", "django", "quart", "litestar", "sqlalchemy", "psycopg",
              "psycopg-pool", "psycopg2-binary", "asyncpg", "anyio", "asgiref"}
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line and line.split("==")[0].lower() in wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--stacks", default=",".join(BENCH_STACKS))
    parser.add_argument("--limit", type=float, default=25.0, help="seconds to wait for abandoned work to end")
    parser.add_argument("--no-scenarios", action="store_true", help="only the per-stack figures")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    keys = [k for k in args.stacks.split(",") if k]
    for name in servers:
        command(name, "x:app")  # unknown names fail here, before anything starts
    unknown = [k for k in keys if k not in STACKS]
    if unknown:
        parser.error(f"unknown stacks {unknown}; known: {', '.join(STACKS)}")
    rows: list[dict] = []
    extra: dict = {}
    workdir = Path("/tmp")
    with postgres_cluster(max_connections=100) as pg:
        for server in servers:
            started = time.monotonic()
            together = [k for k in keys if k not in ALONE]
            rows += run_stacks(pg, server, together, args.limit)
            for key in keys:
                if key in ALONE:
                    rows += run_stacks(pg, server, [key], args.limit)
            if not args.no_scenarios:
                extra[server] = scenarios(pg, server, workdir)
            print(f"== {server}: {time.monotonic() - started:.0f} s", flush=True)
            for row in rows:
                if row["server"] == server:
                    print(f"   {row['stack']:18} {seconds_cell(row)}", flush=True)
            if server in extra:
                print(f"   {extra[server]}", flush=True)
    table = markdown(rows, extra, servers)
    print(table)
    info = machine()
    info["versions"].update(stack_versions())
    cmd = command_line("abandoned.py", None)
    path = write_results("abandoned", {"machine": info, "servers": servers, "rows": rows, "scenarios": extra,
                                       "limit": args.limit}, table, cmd)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
