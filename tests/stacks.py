"""Abandoned work on real stacks (issue 14): the harness shared by tests/test_abandoned_stacks.py
and bench/abandoned.py.

* PostgreSQL: ``postgres_cluster`` (tests/support/components.py, also behind the ``postgres``
  fixture), ``max_connections`` low enough (100) to show exhaustion, watched by ``PgMonitor``.
* ``STACKS``: the apps of tests/apps/stacks, what each one runs and how its work is seen.
* ``ServerProcess``: any server (Tether by its CLI, or a peer) serving one stack in a process
  of its own, its output in a file, its thread count from /proc.
* ``Activity``: pg_stat_activity polled every 10 ms: when each request's query (named by the
  ``/* stacks:<id> */`` comment) was first and last seen, and peak backends per application_name.
* ``Events``: what the apps recorded (tests/apps/stacks/_record.py): ends of CPU loops, SSE
  ``finally`` blocks, warnings.
* ``abandon``: "a client that sends a request and closes its socket 300 ms later", and the
  seconds its work then ran on. ``Run`` starts the servers of several stacks at once and
  abandons one request on each, in parallel.

Times are ``time.monotonic()`` everywhere, the apps' included (one clock for all processes).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tests.support.components import PgCluster
from tests.support.disconnect import hang_up
from tests.support.http1 import send_request
from tests.support.server import ROOT
from tests.support.waiting import free_port, wait_for_port

APPS_DIR = ROOT / "tests" / "apps"
POLL = 0.010  # pg_stat_activity is polled every 10 ms
LEAVE_AFTER = 0.300  # the client closes 300 ms after sending
# What a server's output must not contain after an abandoned request (error-level reports).
BAD_OUTPUT = re.compile(r"Traceback \(most recent call last\)|Task exception was never retrieved|"
                        r"Task was destroyed but it is pending|non-checked-in|ERROR", re.M)


# ---------------------------------------------------------------------- PostgreSQL
class PgMonitor:
    """A separate autocommit psycopg connection that looks at pg_stat_activity (thread-safe)."""

    def __init__(self, pg: PgCluster) -> None:
        import psycopg

        self.conn = psycopg.connect(pg.conninfo("stacks-monitor"), autocommit=True, connect_timeout=5)
        self.lock = threading.Lock()

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def snapshot(self) -> list[tuple[str, str, str]]:
        """(application_name, state, query) of every backend of the stack apps."""
        return self.rows("SELECT application_name, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity "
                         "WHERE application_name LIKE 'stacks-%%' AND application_name <> 'stacks-monitor'")

    def backends(self, app_name: str) -> collections.Counter:
        """Backends of one application_name by state ('active', 'idle', 'idle in transaction')."""
        return collections.Counter(state for name, state, _ in self.snapshot() if name == app_name)

    def total_backends(self) -> int:
        return self.rows("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]

    def terminate(self, like: str = "stacks-%") -> int:
        """pg_terminate_backend for every backend whose application_name is LIKE ``like``."""
        return len(self.rows("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s "
                             "AND application_name <> 'stacks-monitor' AND pid <> pg_backend_pid()", like))

    def close(self) -> None:
        with self.lock:
            self.conn.close()


MARKER = re.compile(r"/\* stacks:([A-Za-z0-9_.-]+) \*/")


class Activity:
    """pg_stat_activity every 10 ms in a thread: per request id (from the query's comment) when
    its query was first seen active, last seen, and when it was first seen gone; per
    application_name the peak number of backends; optionally the peak thread count of a server."""

    def __init__(self, monitor: PgMonitor, threads_of: Callable[[], int] | None = None) -> None:
        self.monitor = monitor
        self.threads_of = threads_of
        self.first_seen: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self.gone_at: dict[str, float] = {}
        self.peak: collections.Counter = collections.Counter()
        self.peak_total = 0
        self.peak_threads = 0
        self.polls = 0
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="pg-activity", daemon=True)

    def __enter__(self) -> "Activity":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.monitor.snapshot()
            except Exception:  # the cluster restarting or the monitor closed: try again next tick
                time.sleep(POLL)
                continue
            now = time.monotonic()
            active = set()
            per_app: collections.Counter = collections.Counter()
            for name, state, query in rows:
                per_app[name] += 1
                match = MARKER.search(query)
                if match and state == "active" and "pg_sleep" in query:
                    active.add(match.group(1))
            with self._changed:
                for rid in active:
                    self.first_seen.setdefault(rid, now)
                    self.last_seen[rid] = now
                    self.gone_at.pop(rid, None)
                for rid in self.last_seen:
                    if rid not in active and rid not in self.gone_at:
                        self.gone_at[rid] = now
                for name, count in per_app.items():
                    self.peak[name] = max(self.peak[name], count)
                self.peak_total = max(self.peak_total, sum(per_app.values()))
                if self.threads_of is not None:
                    with contextlib.suppress(Exception):
                        self.peak_threads = max(self.peak_threads, self.threads_of())
                self.polls += 1
                self._changed.notify_all()
            time.sleep(POLL)

    def reset_peaks(self) -> None:
        with self._changed:
            self.peak.clear()
            self.peak_total = 0
            self.peak_threads = 0

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result or time.monotonic() >= deadline:
                    return result
                self._changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def running(self, rid: str) -> bool:
        return rid in self.last_seen and rid not in self.gone_at

    def wait_started(self, rid: str, timeout: float) -> float | None:
        return self.wait_for(lambda: self.first_seen.get(rid), timeout)

    def wait_gone(self, rid: str, timeout: float) -> float | None:
        """When the query was first seen gone (None: still running after ``timeout``)."""
        return self.wait_for(lambda: self.gone_at.get(rid), timeout)


# ---------------------------------------------------------------------- what the apps recorded
@dataclass
class Event:
    time: float
    pid: int
    name: str
    rid: str
    detail: str


class Events:
    """The events file of tests/apps/stacks/_record.py."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def read(self) -> list[Event]:
        events = []
        for line in self.path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 4)
            if len(parts) >= 4:
                events.append(Event(float(parts[0]), int(parts[1]), parts[2], parts[3], parts[4] if len(parts) > 4 else ""))
        return events

    def first(self, name: str, rid: str) -> Event | None:
        return next((e for e in self.read() if e.name == name and e.rid == rid), None)

    def wait(self, name: str, rid: str, timeout: float) -> Event | None:
        deadline = time.monotonic() + timeout
        while True:
            event = self.first(name, rid)
            if event is not None or time.monotonic() >= deadline:
                return event
            time.sleep(POLL)

    def warnings(self, since: float = 0.0) -> list[str]:
        """Warnings and WARNING+ log lines the app recorded (from ``since`` on)."""
        return [f"{e.name}: {e.detail}" for e in self.read()
                if (e.name == "warning" or e.name.startswith("log-")) and e.time >= since]


# ---------------------------------------------------------------------- the stacks
@dataclass(frozen=True)
class Stack:
    """One app of tests/apps/stacks and how its abandoned work is seen.

    ``app_name`` set: the work is a PostgreSQL query of that application_name, seen in
    pg_stat_activity; otherwise the app records ``end`` (a CPU loop, a sqlite3 query, an SSE
    ``finally``). ``cpu``: the work burns a core (the bench runs such stacks one at a time)."""

    key: str
    title: str
    module: str
    path: str
    app_name: str | None = None
    attr: str = "app"
    cpu: bool = False
    ok_path: str = "/ok"

    @property
    def app(self) -> str:
        return f"stacks.{self.module}:{self.attr}"


STACKS = {s.key: s for s in (
    Stack("sqla-asyncpg", "FastAPI `async def` + SQLAlchemy asyncio + asyncpg", "fastapi_sqla_asyncpg", "/sleep",
          "stacks-sqla-asyncpg"),
    Stack("sqla-asyncpg-mw", "the same behind Starlette's `BaseHTTPMiddleware`", "fastapi_sqla_asyncpg", "/sleep",
          "stacks-sqla-asyncpg-mw", attr="app_middleware"),
    Stack("psycopg-pool", "FastAPI `async def` + psycopg 3 AsyncConnectionPool", "fastapi_psycopg_pool", "/sleep",
          "stacks-psycopg-pool"),
    Stack("psycopg-sync", "FastAPI `def` + psycopg 3 (sync)", "fastapi_psycopg_sync", "/sleep", "stacks-psycopg-sync"),
    Stack("psycopg2", "FastAPI `def` + psycopg2", "fastapi_psycopg2", "/sleep", "stacks-psycopg2"),
    Stack("sqla-sync", "FastAPI `def` + SQLAlchemy sync engine (psycopg 3)", "fastapi_sqla_sync", "/sleep",
          "stacks-sqla-sync"),
    Stack("django-sync", "Django 5.2 sync view, ORM `pg_sleep`", "django_app", "/sleep", "stacks-django"),
    Stack("django-async", "Django 5.2 async view, ORM through sync_to_async", "django_app", "/async-sleep",
          "stacks-django-async"),
    Stack("litestar-asyncpg", "Litestar `async def` + asyncpg", "litestar_app", "/sleep", "stacks-litestar-asyncpg"),
    Stack("litestar-sync", "Litestar `def` (sync_to_thread) + psycopg 3", "litestar_app", "/sleep-sync",
          "stacks-litestar-psycopg"),
    Stack("cpu", "FastAPI `def`, pure-Python CPU loop", "fastapi_cpu", "/cpu", cpu=True),
    Stack("cpu-optin", "FastAPI `def`, pure-Python CPU loop with the opt-in", "fastapi_cpu", "/cpu-optin", cpu=True),
    Stack("sqlite", "FastAPI `def` + sqlite3 recursive CTE", "sqlite_app", "/sqlite", cpu=True),
    Stack("quart-sse", "Quart SSE, idle generator (`finally`)", "quart_sse", "/sse"),
)}

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{prefix}-{os.getpid()}-{next(_ids)}")


# ---------------------------------------------------------------------- servers
class OptionMissing(RuntimeError):
    """The server refused an option it does not have (e.g. --timeout-request before issue 14)."""


def tether_command(app: str, policy: str = "notify", grace: float = 0.0, extra: Sequence[str] = (),
                   python: str = sys.executable) -> list[str]:
    """Tether by its CLI: one worker, access log on, a short graceful shutdown."""
    return [python, "-m", "tether", app, "--host", "127.0.0.1", "--on-disconnect", policy,
            "--disconnect-grace", str(grace), "--timeout-graceful-shutdown", "1", *extra]


def stack_env(pg: PgCluster, events: Path) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STACKS_PG_HOST": pg.host, "STACKS_PG_PORT": str(pg.port),
           "STACKS_EVENTS": str(events)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers of Gunicorn/Granian are children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in task.read_text().split()]
    return pids


def thread_count(pid: int) -> int:
    """Threads of the process and its descendants, from /proc/<pid>/status."""
    total = 0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
    return total


class ServerProcess:
    """A server serving one app on 127.0.0.1:<port>, output to a file; ``command`` gets the port
    appended as the server wants it (``port_args``)."""

    def __init__(self, command: Sequence[str], env: dict, log: Path, port: int | None = None,
                 port_args: Callable[[int], list[str]] = lambda port: ["--port", str(port)]) -> None:
        self.port = port or free_port()
        self.log = log
        self.command = [*command, *port_args(self.port)]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(self.command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> "ServerProcess":
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.proc)
        except AssertionError as exc:
            self.stop()
            output = self.output()
            match = re.search(r"No such option:? '?(--[\w-]+)", output)
            if match:
                raise OptionMissing(f"the server has no option {match.group(1)}") from None
            raise RuntimeError(f"{' '.join(self.command)}: {exc}\n{output[-3000:]}") from None
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def threads(self) -> int:
        return thread_count(self.proc.pid)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM to its process group; SIGKILL if it is not gone after ``timeout`` (an abandoned
        thread still running keeps a Python process from exiting)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover workers of a supervisor
        self._log_file.close()


@dataclass
class Abandoned:
    """One abandoned request: when its work started and how long it ran on after the client left."""

    stack: str
    rid: str
    sent: float
    started: float | None = None
    left: float = 0.0
    ended: float | None = None  # None: still running when the measurement stopped
    limit: float = 0.0
    detail: str = ""

    @property
    def ran_on(self) -> float | None:
        """Seconds from the client leaving to the work ending (None: beyond ``limit``)."""
        return None if self.ended is None else max(0.0, self.ended - self.left)

    def describe(self) -> str:
        if self.started is None:
            return "the work never started"
        if self.ended is None:
            return f"still running {self.limit:.1f} s after the client left"
        return f"ran on {self.ran_on * 1000:.0f} ms after the client left"


def abandon(server: ServerProcess, stack: Stack, activity: Activity | None, events: Events, limit: float,
            seconds: float = 20.0, after: float = LEAVE_AFTER, rid: str | None = None) -> Abandoned:
    """Send one request, close the socket ``after`` seconds later (later if its work has not
    started by then, at most 5 s), and measure for up to ``limit`` seconds when its work ended."""
    rid = rid or new_id(stack.key)
    sock = send_request(server.port, f"{stack.path}?id={rid}&s={seconds}")
    result = Abandoned(stack.key, rid, time.monotonic(), limit=limit)
    try:
        if stack.app_name:
            assert activity is not None, "a PostgreSQL stack needs an Activity watch"
            result.started = activity.wait_started(rid, 5.0)
        else:
            event = events.wait("start", rid, 5.0)
            result.started = event.time if event else None
        time.sleep(max(0.0, result.sent + after - time.monotonic()))
    finally:
        result.left = hang_up(sock)
    if result.started is None:
        return result
    if stack.app_name:
        result.ended = activity.wait_gone(rid, limit)  # type: ignore[union-attr]
    else:
        end = events.wait("end", rid, limit)
        if end is not None:
            result.ended, result.detail = end.time, end.detail
    return result


# ---------------------------------------------------------------------- several stacks at once
@dataclass
class Served:
    stack: Stack
    server: ServerProcess
    events: Events
    result: Abandoned | None = None
    output: str = ""
    warnings: list[str] = field(default_factory=list)


class Run:
    """The servers of several stacks, started together; ``abandon_all`` abandons one request on
    each in parallel. Leaves nothing behind: servers stopped, leftover backends terminated."""

    def __init__(self, pg: PgCluster, stacks: Sequence[Stack], command: Callable[[Stack], list[str]],
                 port_args: Callable[[int], list[str]] | None = None, workdir: Path | None = None) -> None:
        self.pg = pg
        self.stacks = list(stacks)
        self.command = command
        self.port_args = port_args
        self.workdir = Path(tempfile.mkdtemp(prefix="tether-stacks-", dir=workdir))
        self.monitor = PgMonitor(pg)
        self.served: dict[str, Served] = {}
        self.activity = Activity(self.monitor)

    def __enter__(self) -> "Run":
        self.activity.__enter__()
        try:
            for stack in self.stacks:
                events = Events(self.workdir / f"{stack.key}.events")
                kwargs = {"port_args": self.port_args} if self.port_args else {}
                server = ServerProcess(self.command(stack), stack_env(self.pg, events.path),
                                       self.workdir / f"{stack.key}.log", **kwargs)
                self.served[stack.key] = Served(stack, server, events)
            with ThreadPoolExecutor(len(self.served) or 1) as pool:
                list(pool.map(lambda s: self._warm(s), self.served.values()))
        except BaseException:
            self.__exit__()
            raise
        return self

    @staticmethod
    def _warm(served: Served) -> None:
        served.server.wait_ready()
        status, body = served.server.get(served.stack.ok_path)
        if status != 200:
            raise RuntimeError(f"{served.stack.key}: {served.stack.ok_path} answered {status} {body[:300]!r}\n"
                               f"{served.server.output()[-3000:]}")

    def abandon_all(self, limit: float, seconds: float = 20.0, settle: float = 0.3) -> dict[str, Served]:
        """One abandoned request per stack, in parallel; then, ``settle`` s later, each server's
        output and recorded warnings so far (before any shutdown noise)."""
        with ThreadPoolExecutor(len(self.served) or 1) as pool:
            futures = {key: pool.submit(abandon, s.server, s.stack, self.activity, s.events, limit, seconds)
                       for key, s in self.served.items()}
            for key, future in futures.items():
                self.served[key].result = future.result()
        time.sleep(settle)
        for served in self.served.values():
            served.output = served.server.output()
            served.warnings = served.events.warnings(since=served.result.sent if served.result else 0.0)
        return self.served

    def __exit__(self, *exc: object) -> None:
        with ThreadPoolExecutor(len(self.served) or 1) as pool:
            list(pool.map(lambda s: s.server.stop(), self.served.values()))
        self.activity.__exit__()
        with contextlib.suppress(Exception):
            self.monitor.terminate()
        self.monitor.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def bad_output(text: str) -> list[str]:
    """Error-level lines in a server's output (tracebacks, unretrieved task exceptions, pool warnings)."""
    return [line for line in text.splitlines() if BAD_OUTPUT.search(line)]


# ---------------------------------------------------------------------- scenarios
def many_abandoned(server: ServerProcess, stack: Stack, activity: Activity, count: int = 110, spacing: float = 0.010,
                   after: float = LEAVE_AFTER, observe: float = 1.5) -> dict:
    """``count`` abandoned requests ``spacing`` s apart, each client leaving ``after`` s after its
    send: the peak threads of the server and backends of the stack's application_name while they
    run, and what a normal request answers afterwards."""
    baseline_threads = server.threads()
    activity.threads_of = server.threads
    activity.reset_peaks()
    socks: list[tuple[float, socket.socket]] = []
    start = time.monotonic()
    try:
        for n in range(count):
            time.sleep(max(0.0, start + n * spacing - time.monotonic()))
            socks.append((time.monotonic(), send_request(server.port, f"{stack.path}?id={new_id('many')}&s=20")))
            while socks and socks[0][0] + after <= time.monotonic():
                hang_up(socks.pop(0)[1])
        for sent, sock in socks:
            time.sleep(max(0.0, sent + after - time.monotonic()))
            hang_up(sock)
    finally:
        for _, sock in socks:
            sock.close()
    time.sleep(observe)
    try:
        status, body = server.get(stack.ok_path, timeout=10)
    except (OSError, http.client.HTTPException) as exc:
        status, body = 0, repr(exc).encode()
    activity.threads_of = None
    return {"requests": count, "baseline_threads": baseline_threads, "peak_threads": activity.peak_threads,
            "peak_backends": activity.peak[stack.app_name], "next_status": status, "next_body": body[:200].decode(errors="replace")}


def query_latency(server: ServerProcess, stack: Stack, events: Events, samples: int = 7) -> float:
    """Median seconds from sending a request to the app starting its query (its ``start`` event)."""
    latencies = []
    for _ in range(samples):
        rid = new_id("latency")
        sent = time.monotonic()
        status, _ = server.get(f"{stack.path}?id={rid}&s=0")
        event = events.first("start", rid)
        if status == 200 and event is not None:
            latencies.append(event.time - sent)
    if not latencies:
        raise RuntimeError(f"{stack.key}: no request recorded its start")
    return sorted(latencies)[len(latencies) // 2]


def early_leaves(server: ServerProcess, stack: Stack, activity: Activity, events: Events, count: int = 40,
                 spread: float = 0.020, aimed: bool = True, gap: float = 0.060, check_after: float = 1.0) -> dict:
    """The psycopg 3 early-cancel race: ``count`` clients leave between 0 and ``spread`` s after
    their send, ``gap`` s apart. ``aimed``: the leaves are packed into the 3 ms around the moment
    the app sends its query (measured first, ``query_latency``), where a cancel can be lost;
    otherwise spread evenly over 0..``spread``. A query still active ``check_after`` s after the
    last client left has escaped (it runs its full 20 s)."""
    if aimed:
        latency = query_latency(server, stack, events)
        offsets = [min(spread, max(0.0, latency - 0.0005 + 0.003 * n / max(1, count - 1))) for n in range(count)]
    else:
        latency = None
        offsets = [spread * n / max(1, count - 1) for n in range(count)]
    leaves: dict[str, float] = {}
    for offset in offsets:
        rid = new_id("early")
        sock = send_request(server.port, f"{stack.path}?id={rid}&s=20")
        sent = time.monotonic()
        while time.monotonic() < sent + offset:
            pass  # a sleep's granularity would blur sub-millisecond offsets
        leaves[rid] = hang_up(sock)
        time.sleep(gap)
    time.sleep(max(0.0, max(leaves.values()) + check_after - time.monotonic()))
    escaped = sorted(rid for rid in leaves if activity.running(rid))
    started = sum(1 for rid in leaves if rid in activity.first_seen)
    return {"leaves": count, "aimed": aimed, "query_latency_ms": None if latency is None else latency * 1000,
            "offsets_ms": [round(o * 1000, 2) for o in (offsets[0], offsets[-1])],
            "queries_started": started, "escaped": len(escaped), "escaped_ids": escaped}


def pool_cycles(server: ServerProcess, stack: Stack, activity: Activity, cycles: int = 100, batch: int = 5,
                target: float = 0.5) -> dict:
    """``cycles`` abandoned requests, ``batch`` at a time (the pool's size): each batch's clients
    leave 300 ms after sending. Stops early if a batch's queries are not all gone ``target`` s
    after the client left (the pool would only be exhausted after that)."""
    done = 0
    slowest = 0.0
    while done < cycles:
        size = min(batch, cycles - done)
        rids = [new_id(f"{stack.key}-pool") for _ in range(size)]
        socks = [send_request(server.port, f"{stack.path}?id={rid}&s=20") for rid in rids]
        sent = time.monotonic()
        activity.wait_for(lambda: all(rid in activity.first_seen for rid in rids), 5.0)
        time.sleep(max(0.0, sent + LEAVE_AFTER - time.monotonic()))
        left = time.monotonic()
        for sock in socks:
            hang_up(sock)
        done += size
        gone = activity.wait_for(lambda: all(activity.gone_at.get(rid) for rid in rids), target + 0.5)
        if not gone or not all(rid in activity.first_seen for rid in rids):
            return {"cycles": done, "completed": False, "slowest_ms": None,
                    "stuck": [rid for rid in rids if not activity.gone_at.get(rid)],
                    "never_started": [rid for rid in rids if rid not in activity.first_seen]}
        slowest = max(slowest, max(activity.gone_at[rid] for rid in rids) - left)
    return {"cycles": done, "completed": True, "slowest_ms": slowest * 1000, "stuck": []}


def abandon_many_at_once(server: ServerProcess, stack: Stack, events: Events, count: int, seconds: float,
                         activity: Activity | None = None) -> list[Abandoned]:
    """``count`` requests abandoned together (each leaving 300 ms after its send), not waiting
    for the work's end: what is left behind is measured by the caller."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: abandon(server, stack, activity, events, limit=0.0, seconds=seconds),
                             range(count)))
