"""Process faults: descriptor exhaustion on accept (EMFILE), a worker that exits under the
app's hand. (Killed workers, SIGTERM and SIGHUP under load: tests/test_workers.py.)"""

from __future__ import annotations

import socket
import sys
import time

import pytest

from tests.support.http1 import raw_request
from tests.support.process import running

pytestmark = pytest.mark.timeout(90)

FD_LIMIT = 64
LIMITED = ["bash", "-c", f'ulimit -n {FD_LIMIT} && exec "$0" "$@"', sys.executable, "-m", "tether"]


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    return sockets


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_out_of_descriptors_is_logged_and_serving_resumes(loop: str) -> None:
    with running("edge_apps:info", "--loop", loop, "--timeout-keep-alive", "30", command=LIMITED) as srv:
        assert raw_request(srv.port)[0] == 200
        idle = open_idle_connections(srv.port, FD_LIMIT * 2)  # the kernel's backlog takes the excess
        try:
            srv.wait_for("Out of file descriptors", timeout=10)
        finally:
            for sock in idle:
                sock.close()
        # Descriptors free again: new connections are served (no restart, no manual action).
        srv.wait_serving(timeout=10)
        assert srv.proc.poll() is None


def test_worker_that_exits_under_the_app_is_replaced_and_others_keep_serving() -> None:
    with running("edge_apps:info", "--workers", "2", ready=2) as srv:
        before = set(srv.worker_pids())
        try:
            raw_request(srv.port, path="/exit", timeout=5)
        except (OSError, AssertionError):
            pass  # the worker died with the connection open: the client sees a reset or EOF
        out = srv.wait_for("died", timeout=10)
        assert "exit status 3" in out
        srv.wait_ready(3, timeout=20)
        deadline = time.monotonic() + 10
        served = 0
        while time.monotonic() < deadline and served < 20:
            assert raw_request(srv.port, timeout=5)[0] == 200
            served += 1
        assert served == 20
        assert len(srv.children()) == 2 and srv.children() != before
