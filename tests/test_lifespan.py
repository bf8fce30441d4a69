"""ASGI lifespan, for real: Tether subprocesses with apps whose startup works, fails or raises."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from tests.support.http1 import raw_request
from tests.support.process import run_cli, running
from tests.support.server import serve
from tests.support.waiting import free_port, wait_until
from tether.lifespan import LifespanFailed

pytestmark = pytest.mark.timeout(60)


def test_startup_and_shutdown_run(tmp_path):
    marker = tmp_path / "shutdown.txt"
    with running("edge_apps:stateful", env={"TETHER_TEST_SHUTDOWN_FILE": str(marker)}) as srv:
        out = srv.output()
        assert out.index("STARTUP RAN") < out.index("Tether running on")  # startup before serving
        state = httpx.get(srv.url, timeout=5).json()
        assert state == {"greeting": "hello from startup", "startup_pid": srv.pid}
        assert not marker.exists()
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(10) == 0
        assert marker.read_text() == f"shutdown ran in {srv.pid}\n"
        out = srv.output()
        assert out.index("Shutting down") < out.index("SHUTDOWN RAN")


def test_request_state_is_a_copy_per_request():
    with running("edge_apps:stateful") as srv:
        assert "mutated_by_a_request" not in httpx.get(srv.url + "/?mutate=1", timeout=5).json()
        state = httpx.get(srv.url, timeout=5).json()
        assert state["greeting"] == "hello from startup"
        assert "mutated_by_a_request" not in state


def test_startup_runs_in_each_worker(tmp_path):
    marker = tmp_path / "shutdown.txt"
    with running("edge_apps:stateful", "--workers", "2", ready=2,
                 env={"TETHER_TEST_SHUTDOWN_FILE": str(marker)}) as srv:
        assert srv.output().count("STARTUP RAN") == 2
        workers = set(srv.worker_pids())
        state = json.loads(raw_request(srv.port)[2])
        assert state["startup_pid"] in workers  # the state comes from the serving worker's startup
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(15) == 0
        lines = marker.read_text().splitlines()
        assert sorted(lines) == sorted(f"shutdown ran in {pid}" for pid in workers)


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_startup_failed_message_exits_non_zero(mode):
    port = free_port()
    result = run_cli("edge_apps:startup_failed", "--lifespan", mode, "--port", str(port))
    assert result.returncode != 0
    assert "database is down (edge test)" in result.stderr
    assert "Application startup failed" in result.stderr
    assert "Tether running on" not in result.stderr
    assert "Traceback" not in result.stderr  # a failure message is not an exception


def test_startup_exception_with_lifespan_on_exits_non_zero():
    result = run_cli("edge_apps:startup_raises", "--lifespan", "on", "--port", str(free_port()))
    assert result.returncode != 0
    assert "cannot reach the cache (edge test)" in result.stderr
    assert "Application startup failed" in result.stderr
    assert "Tether running on" not in result.stderr


def test_startup_failure_with_workers_exits_non_zero():
    result = run_cli("edge_apps:startup_failed", "--workers", "2", "--port", str(free_port()), timeout=30)
    assert result.returncode != 0
    assert "database is down (edge test)" in result.stderr
    assert "died" not in result.stderr  # not restarted in a loop
    assert "Tether running on" not in result.stderr


def test_lifespan_auto_app_without_lifespan_serves():
    with running("edge_apps:no_lifespan") as srv:
        assert "ASGI 'lifespan' protocol appears unsupported" in srv.output()
        assert httpx.get(srv.url, timeout=5).text == "serving without lifespan"
        assert "Traceback" not in srv.output()
        assert srv.stop() == 0


def test_lifespan_on_app_without_lifespan_fails():
    result = run_cli("edge_apps:no_lifespan", "--lifespan", "on", "--port", str(free_port()))
    assert result.returncode != 0
    assert "unsupported scope type 'lifespan' (edge test)" in result.stderr


@pytest.mark.parametrize("app", ["edge_apps:startup_failed", "edge_apps:startup_raises", "edge_apps:stateful"])
def test_lifespan_off_skips_lifespan(app):
    with running(app, "--lifespan", "off") as srv:
        response = httpx.get(srv.url, timeout=5)
        assert response.status_code == 200
        if app == "edge_apps:stateful":
            assert response.json() == {}
        else:
            assert response.text == "should never serve"
        assert srv.stop() == 0
        assert "STARTUP RAN" not in srv.output() and "SHUTDOWN RAN" not in srv.output()


def test_shutdown_failed_is_reported():
    with running("edge_apps:shutdown_failed") as srv:
        assert httpx.get(srv.url, timeout=5).text == "ok"
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
        assert "could not flush the queue (edge test)" in srv.output()


# ---------------------------------------------------------------------- in-process (conftest.serve)
async def _slow_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.sleep(0.3)
        scope["state"]["ready"] = "after a slow startup"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = json.dumps(dict(scope["state"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_in_process_server_waits_for_startup():
    with serve(_slow_startup, lifespan="on") as srv:
        assert json.loads(raw_request(srv.port)[2]) == {"ready": "after a slow startup"}


def test_in_process_startup_failure_raises():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "nope (edge test)"})

    with pytest.raises(LifespanFailed, match="nope"):
        with serve(app, lifespan="on"):
            pass


def test_startup_failed_with_lifespan_on_never_listens():
    port = free_port()
    with running("edge_apps:startup_failed", "--lifespan", "on", "--port", str(port), port=False, ready=0) as srv:
        wait_until(lambda: srv.proc.poll() is not None, 15, "tether exiting", interval=0.05)
        assert srv.proc.returncode != 0
    with pytest.raises(OSError):
        raw_request(port, timeout=1)
