"""--workers N: the supervisor, for real: forked workers, kill -9, SIGTERM, SIGHUP, recycling."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.http1 import RequestLoop, raw_request, recv_to_eof
from tests.support.server import serve
from tests.support.process import pid_alive, run_api, run_cli, running
from tests.support.waiting import free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def pid_of_response(port: int, path: str = "/") -> int:
    status, _, body = raw_request(port, path=path)
    assert status == 200, (status, body)
    return json.loads(body)["pid"]


def collect_pids(port: int, want: int, attempts: int = 200) -> set[int]:
    """Many new connections (some blocking a worker's loop briefly) until ``want`` pids answered."""
    seen: set[int] = set()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(attempts // 4):
            seen.update(pool.map(lambda _: pid_of_response(port, "/block?ms=10"), range(4)))
            if len(seen) >= want:
                break
    return seen


def test_two_workers_serve_from_two_pids():
    with running("edge_apps:info", "--workers", "2", ready=2) as srv:
        workers = set(srv.worker_pids())
        assert len(workers) == 2 and srv.pid not in workers
        assert srv.children() == workers
        seen = collect_pids(srv.port, 2)
        assert seen == workers


def test_killed_worker_is_replaced():
    with running("edge_apps:info", "--workers", "2", ready=2) as srv:
        first, second = srv.worker_pids()
        os.kill(first, signal.SIGKILL)
        out = srv.wait_for(f"Worker {first} died", timeout=10)
        assert "exit status -9" in out
        srv.wait_ready(3, timeout=20)  # the replacement is serving
        live = srv.children()
        assert first not in live and second in live and len(live) == 2, live
        replacement = (live - {second}).pop()
        assert srv.worker_pids()[-1] == replacement
        # Serving goes on, from both the old and the new worker.
        seen = collect_pids(srv.port, 2)
        assert seen == {second, replacement}


def test_sigterm_stops_supervisor_and_workers():
    with running("edge_apps:info", "--workers", "2", ready=2) as srv:
        workers = srv.worker_pids()
        assert pid_of_response(srv.port) in workers
        started = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(15) == 0
        assert time.monotonic() - started < 10
        wait_until(lambda: not any(pid_alive(pid) for pid in workers), 5, "every worker gone", interval=0.05)
        out = srv.output()
        assert "Received SIGTERM: stopping workers" in out
        assert out.count("Shutting down") == 2
        assert "died" not in out and "killing" not in out  # each worker exited by itself, status 0


def test_sigterm_lets_in_flight_requests_finish():
    with running("edge_apps:info", "--workers", "2", "--timeout-graceful-shutdown", "10", ready=2) as srv:
        result: dict = {}

        def slow():
            try:
                result["response"] = raw_request(srv.port, path="/sleep?s=1", timeout=15)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=slow, daemon=True)
        thread.start()
        srv.wait_for("SLEEP START")
        srv.send_signal(signal.SIGTERM)
        thread.join(15)
        assert "error" not in result, result
        assert result["response"][0] == 200 and result["response"][2] == b"slept 1.0"
        assert srv.wait(15) == 0


def test_sighup_rolling_restart_without_failures():
    with running("edge_apps:info", "--workers", "2", ready=2) as srv:
        old = set(srv.worker_pids())
        with RequestLoop(srv.port) as loop:
            wait_until(lambda: loop.ok >= 20, 10, "20 requests served", interval=0.05)
            srv.send_signal(signal.SIGHUP)
            srv.wait_for("Received SIGHUP")
            srv.wait_ready(4, timeout=30)
            wait_until(lambda: not any(pid_alive(pid) for pid in old), 20,
                       lambda: f"the old workers gone:\n{srv.output()}", interval=0.05)
            served_before = loop.ok
            wait_until(lambda: loop.ok >= served_before + 20, 10, "20 more requests served", interval=0.05)
        new = set(srv.worker_pids()) - old
        assert len(new) == 2
        assert srv.children() == new
        assert loop.failures == [], loop.failures[:5]
        assert set(loop.pids) & old and set(loop.pids) & new  # served across the restart
        assert collect_pids(srv.port, 2) == new


def test_worker_import_failure_exits_with_one_line():
    result = run_cli("no_such_module_xyz:app", "--workers", "2", "--port", str(free_port()))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("tether: error:")]
    assert errors == ["tether: error: could not import module 'no_such_module_xyz'"], result.stderr
    assert "Traceback" not in result.stderr
    assert " ERROR " not in result.stderr, result.stderr  # no second, log-formatted copy of the error
    assert "died" not in result.stderr  # the supervisor did not keep restarting it


def test_worker_import_exception_exits_with_one_line():
    result = run_cli("edge_broken:app", "--workers", "2", "--port", str(free_port()))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("tether: error:")]
    assert len(errors) == 1 and "broken on purpose" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_workers_need_an_import_string():
    result = run_api("workers=2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tether: error: --workers and --reload need the app as an import string, like 'main:app'"
    ]


def test_limit_max_requests_recycles_workers():
    with running("edge_apps:info", "--workers", "2", "--limit-max-requests", "5", ready=2) as srv:
        first = set(srv.worker_pids())
        pids = []
        for _ in range(30):
            pids.append(pid_of_response(srv.port))
        srv.wait_for("exited (recycled)", timeout=10)
        wait_until(lambda: len(srv.worker_pids()) >= 4, 15, "4 workers started in all", interval=0.05)
        assert len(set(pids)) >= 3, pids  # new workers took over
        assert set(pids) - first
        wait_until(lambda: len(srv.children()) == 2, 10, lambda: f"2 workers (now {srv.children()})", interval=0.05)
        # Still serving after the recycling.
        assert pid_of_response(srv.port) in srv.children()
        assert srv.stop() == 0


def test_limit_max_requests_with_workers_loses_no_request():
    with running("edge_apps:info", "--workers", "2", "--limit-max-requests", "10", ready=2) as srv:
        with RequestLoop(srv.port) as loop:
            wait_until(lambda: loop.ok >= 60, 30, lambda: f"60 requests served ({loop.ok}, {loop.failures[:3]})",
                       interval=0.05)
        assert loop.failures == [], loop.failures[:5]
        assert len(set(loop.pids)) >= 4


@pytest.mark.parametrize("sent_before", [b"", b"GET / HTTP/1.1\r\nHo"], ids=["nothing", "half_a_head"])
def test_a_connection_whose_request_is_on_its_way_at_shutdown_is_answered(sent_before: bytes) -> None:
    """A client that connected just as the worker began to shut down (a restart, a recycle) and
    whose request had not been read yet gets its answer, with connection: close, not an
    empty reply (the race seen under load while workers were replaced)."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"answered"})

    with serve(app, lifespan="off", timeout_graceful_shutdown=5) as srv:
        sock = srv.connect()
        if sent_before:
            sock.sendall(sent_before)
        wait_until(lambda: srv.call(lambda: len(srv.state.connections)) == 1, what="the connection accepted")
        srv.loop.call_soon_threadsafe(srv.server.request_exit)
        wait_until(lambda: srv.state.shutting_down, what="the shutdown under way")
        time.sleep(0.2)
        sock.sendall((b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[len(sent_before):])
        data = recv_to_eof(sock)
        sock.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"answered"), data
    assert b"connection: close" in data
