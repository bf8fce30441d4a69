"""``gunicorn -k tether.workers.TetherWorker``: a real Gunicorn arbiter on a free port, real clients.

Each test starts ``python -m gunicorn`` (the version in pyproject's test extra) with the worker
class and checks one behaviour: Tether's protocols and disconnect policy through Gunicorn, the
settings Gunicorn maps, TETHER_* for the rest, and Gunicorn's heartbeat, reload, stop signals and
max-requests.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.http1 import RequestLoop, raw_request
from tests.support.process import pid_alive, running
from tests.support.tls import Certs
from tests.support.waiting import free_port, wait_until

gunicorn = pytest.importorskip("gunicorn")
pytestmark = pytest.mark.timeout(90)
WORKER = "tether.workers.TetherWorker"


def gunicorn_args(port: int, *args: str, workers: int = 1, app: str = "recycle_apps:app") -> list[str]:
    from gunicorn.config import Config

    extra = ["--no-control-socket"] if "control_socket_disable" in Config().settings else []  # (Gunicorn 25+: one per machine)
    return ["-k", WORKER, "-w", str(workers), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3", *extra, *args, app]


class Gunicorn:
    """``with Gunicorn(*args, workers=N) as g:`` a running arbiter whose N workers serve."""

    def __init__(self, *args: str, workers: int = 1, env: dict | None = None, app: str = "recycle_apps:app",
                 ready: bool = True) -> None:
        self.port = free_port()
        self.workers = workers
        self.ready = ready
        self._cm = running(*gunicorn_args(self.port, *args, workers=workers, app=app), port=self.port, ready=0,
                           env=env, command=[sys.executable, "-m", "gunicorn"])

    def __enter__(self):
        self.srv = self._cm.__enter__()
        if self.ready:
            self.srv.wait_ready(self.workers, timeout=20)
        return self.srv

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def get_pid(port: int, path: str = "/") -> int:
    status, _, body = raw_request(port, path=path, timeout=10)
    assert status == 200, (status, body)
    return json.loads(body)["pid"]


def open_waiting_request(srv, port: int) -> socket.socket:
    """A request to /wait whose app is running (it printed WAITING), on a socket the test closes."""
    before = srv.output().count("WAITING")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /wait HTTP/1.1\r\nHost: test\r\n\r\n")
    srv.wait_for("WAITING", count=before + 1)
    return sock


# ---------------------------------------------------------------------- Tether's protocols
def test_http1_h2_prior_knowledge_and_websocket_through_gunicorn():
    from websockets.sync.client import connect

    with Gunicorn(workers=2) as srv:
        out = srv.output()
        assert "Using worker: tether.workers.TetherWorker" in out
        workers = set(srv.worker_pids())
        assert len(workers) == 2 and srv.children() == workers  # the arbiter's children serve
        response = httpx.get(f"http://127.0.0.1:{srv.port}/one", timeout=5)
        assert response.status_code == 200 and response.json()["http_version"] == "1.1"
        assert response.headers["server"] == "tether"
        assert response.json()["pid"] in workers
        with httpx.Client(http1=False, http2=True, timeout=5) as client:  # h2c with prior knowledge
            responses = [client.get(f"http://127.0.0.1:{srv.port}/h2/{i}") for i in range(3)]
        assert [r.http_version for r in responses] == ["HTTP/2"] * 3
        assert {r.json()["http_version"] for r in responses} == {"2"}
        with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=5, close_timeout=5) as ws:
            ws.send("hello")
            reply = ws.recv(timeout=5)
        assert reply.startswith("echo ") and reply.endswith(": hello") and int(reply.split()[1][:-1]) in workers


def test_tls_from_gunicorn_settings_with_h2_by_alpn(tmp_path):
    certs = Certs(tmp_path)
    with Gunicorn("--certfile", str(certs.cert_file), "--keyfile", str(certs.key_file)) as srv:
        assert f"https://127.0.0.1:{srv.port}" in srv.output()
        url = f"https://127.0.0.1:{srv.port}/secure"
        response = httpx.get(url, verify=certs.client_context(), timeout=5)
        assert response.status_code == 200 and response.json()["scheme"] == "https"
        with httpx.Client(http2=True, verify=certs.client_context(), timeout=5) as client:
            response = client.get(url)
        assert response.http_version == "HTTP/2" and response.json()["http_version"] == "2"
    # --cert-reqs 2 (ssl.CERT_REQUIRED) and --ca-certs: a client without a certificate is refused.
    with Gunicorn("--certfile", str(certs.cert_file), "--keyfile", str(certs.key_file), "--cert-reqs", "2",
                  "--ca-certs", str(certs.ca_file)) as srv:
        url = f"https://127.0.0.1:{srv.port}/"
        assert httpx.get(url, verify=certs.client_context(with_client_cert=True), timeout=5).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=certs.client_context(), timeout=5).raise_for_status()


# ---------------------------------------------------------------------- disconnects
def test_client_disconnect_reaches_the_app_under_gunicorn():
    with Gunicorn() as srv:
        sock = open_waiting_request(srv, srv.port)
        started = time.monotonic()
        sock.close()
        srv.wait_for("GONE http.disconnect signal=True", timeout=5)
        assert time.monotonic() - started < 1.0
        time.sleep(0.3)
        assert "CANCELLED" not in srv.output()  # the default policy is notify


@pytest.mark.parametrize("how", ["environment", "gunicorn --env"])
def test_tether_on_disconnect_cancel_under_gunicorn(how):
    env = {"TETHER_ON_DISCONNECT": "cancel"} if how == "environment" else None
    args = ["--env", "TETHER_ON_DISCONNECT=cancel"] if how != "environment" else []
    with Gunicorn(*args, env=env) as srv:
        sock = open_waiting_request(srv, srv.port)
        started = time.monotonic()
        sock.close()
        srv.wait_for("CANCELLED", timeout=5)
        assert time.monotonic() - started < 1.0  # cancelled at once (while it awaited receive())
        assert "NOT CANCELLED" not in srv.output()


# ---------------------------------------------------------------------- settings
def test_gunicorn_settings_reach_tether():
    args = ["--keep-alive", "1", "--limit-request-line", "100", "--limit-request-fields", "5",
            "--forwarded-allow-ips", "127.0.0.1", "--access-logfile", "-"]
    with Gunicorn(*args, env={"TETHER_TIMEOUT_KEEP_ALIVE": "60", "TETHER_HEADER": "x-from-tether-env:yes"}) as srv:
        out = srv.wait_for("TETHER_TIMEOUT_KEEP_ALIVE is ignored under Gunicorn: --keep-alive applies")
        port = srv.port
        # --limit-request-line and --limit-request-fields
        assert raw_request(port, path="/" + "a" * 200)[0] == 414
        assert raw_request(port, extra=b"".join(b"x-%d: 1\r\n" % i for i in range(10)))[0] == 431
        # --forwarded-allow-ips: 127.0.0.1 is trusted, so X-Forwarded-For is the client
        status, headers, body = raw_request(port, extra=b"X-Forwarded-For: 203.0.113.9\r\n")
        assert status == 200 and json.loads(body)["client"][0] == "203.0.113.9"
        assert headers["x-from-tether-env"] == "yes"  # a Tether-only option from TETHER_*
        # --keep-alive 1 (not TETHER_'s 60): an idle connection is closed within about 2 s
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(65536) == b""
            assert time.monotonic() - started < 3
        # Gunicorn's --access-logfile carries Tether's access line
        out = srv.wait_for('"GET / HTTP/1.1" 200')
        assert "Tether running on" in out


def test_forwarded_allow_ips_not_trusting_the_client():
    with Gunicorn("--forwarded-allow-ips", "10.1.2.3") as srv:
        status, _, body = raw_request(srv.port, extra=b"X-Forwarded-For: 203.0.113.9\r\n")
        assert status == 200 and json.loads(body)["client"][0] == "127.0.0.1"


def test_no_access_log_unless_gunicorn_has_one():
    with Gunicorn() as srv:
        for _ in range(3):
            assert get_pid(srv.port)
        time.sleep(0.3)
        assert '"GET / HTTP/1.1" 200' not in srv.output()


def test_root_path_and_gunicorn_only_settings():
    from gunicorn.config import Config

    if "root_path" not in Config().settings:
        pytest.skip("Gunicorn < 24 has no --root-path")
    with Gunicorn("--root-path", "/api", "--http2-max-concurrent-streams", "7") as srv:
        assert json.loads(raw_request(srv.port)[2])["root_path"] == "/api"
        srv.wait_for("Gunicorn's --http2-max-concurrent-streams is for its own workers: TetherWorker uses "
                     "TETHER_H2_MAX_CONCURRENT_STREAMS")


@pytest.mark.parametrize("env, args, app, fragment", [
    ({"TETHER_LOOP": "tokio"}, [], "recycle_apps:app", "tether: error: TETHER_LOOP: 'tokio' is not one of"),
    ({"TETHER_WS_MAX_SIZE": "0"}, [], "recycle_apps:app", "tether: error: --ws-max-size must be at least 1"),
    ({}, ["--proxy-protocol", "v1"], "recycle_apps:app", "tether: error: Gunicorn's --proxy-protocol is not supported"),
    ({"TETHER_METRICS": "true"}, [], "recycle_apps:app", "tether: error: TETHER_METRICS is not supported under Gunicorn"),
    ({}, [], "recycle_apps:wsgi_app", "does not take (scope, receive, send)"),
])
def test_bad_settings_stop_gunicorn_with_one_line(env, args, app, fragment):
    with Gunicorn(*args, env=env, app=app, ready=False) as srv:
        assert srv.wait(20) == 3  # Gunicorn's WORKER_BOOT_ERROR: the arbiter stops
        out = srv.output()
        lines = [line for line in out.splitlines() if fragment in line]
        assert len(lines) == 1, out
        assert "Traceback" not in out and "Tether running on" not in out
        assert "Worker failed to boot" in out


# ---------------------------------------------------------------------- Gunicorn's process management
def test_heartbeat_keeps_a_busy_worker_and_timeout_kills_a_blocked_one():
    with Gunicorn("--timeout", "2") as srv:
        first = get_pid(srv.port)
        # 4 s of awaiting (the event loop runs): longer than --timeout, and the worker lives.
        assert get_pid(srv.port, "/sleep?s=4") == first
        assert "WORKER TIMEOUT" not in srv.output()
        # A blocked event loop stops the heartbeat: the arbiter aborts the worker and replaces it.
        started = time.monotonic()
        assert raw_request_bytes(srv.port, "/block?s=20", timeout=15) == b""  # no answer: the worker is gone
        assert time.monotonic() - started < 8
        out = srv.wait_for(f"WORKER TIMEOUT (pid:{first})", timeout=10)
        assert f"Worker {first} aborted by the arbiter (--timeout 2 s): its event loop was blocked in" in out
        assert "time.sleep(" in out  # where it was stuck
        srv.wait_ready(2, timeout=20)
        wait_until(lambda: not pid_alive(first), 10, "the first worker gone", interval=0.05)
        assert get_pid(srv.port) != first
        out = srv.output()
        assert "SystemExit" not in out and "Exception in ASGI application" not in out and "Worker failed to boot" not in out


def raw_request_bytes(port: int, path: str, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


class InFlight:
    """One slow request in a thread: its result (status, body) or the exception."""

    def __init__(self, port: int, path: str) -> None:
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(port, path), daemon=True)
        self.thread.start()

    def _run(self, port: int, path: str) -> None:
        try:
            status, _, body = raw_request(port, path=path, timeout=20)
            self.result = (status, body)
        except Exception as exc:
            self.result = exc

    def join(self) -> object:
        self.thread.join(25)
        return self.result


def test_sighup_replaces_workers_without_failed_requests():
    with Gunicorn(workers=2) as srv:
        old = set(srv.worker_pids())
        with RequestLoop(srv.port) as loop:
            wait_until(lambda: loop.ok >= 20, 10, "20 requests served", interval=0.05)
            slow = InFlight(srv.port, "/sleep?s=1.5")
            time.sleep(0.3)
            srv.send_signal(signal.SIGHUP)
            srv.wait_for("Handling signal: hup")
            srv.wait_ready(4, timeout=30)
            wait_until(lambda: not any(pid_alive(pid) for pid in old), 20,
                       lambda: f"the old workers gone:\n{srv.output()}", interval=0.05)
            served = loop.ok
            wait_until(lambda: loop.ok >= served + 20, 10, "20 more requests served", interval=0.05)
        result = slow.join()
        assert isinstance(result, tuple) and result[0] == 200, result  # in flight across the reload
        assert loop.failures == [], loop.failures[:5]
        new = set(srv.worker_pids()) - old
        assert len(new) == 2
        # (the arbiter may have forked one more worker around the HUP and be stopping it as
        # excess, which takes the worker's graceful shutdown: wait for that, not only look)
        wait_until(lambda: srv.children() == new, 10,
                   lambda: f"children {srv.children()} are the new workers {new}:\n{srv.output()}", interval=0.05)
        assert set(loop.pids) & old and set(loop.pids) & new


def test_sigterm_finishes_in_flight_requests_within_graceful_timeout():
    with Gunicorn() as srv:
        slow = InFlight(srv.port, "/sleep?s=1")
        time.sleep(0.3)
        srv.send_signal(signal.SIGTERM)
        result = slow.join()
        assert isinstance(result, tuple) and result[0] == 200, result
        assert srv.wait(10) == 0
        assert "LIFESPAN SHUTDOWN" in srv.output()
    with Gunicorn() as srv:  # --graceful-timeout 3: a 20 s request is cut, before the arbiter's SIGKILL
        slow = InFlight(srv.port, "/sleep?s=20")
        time.sleep(0.3)
        started = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(10) == 0
        assert 2.0 < time.monotonic() - started < 3.5
        assert not isinstance(slow.join(), tuple)
        out = srv.output()
        assert "Graceful shutdown timed out after 2.7s" in out
        assert "SIGKILL" not in out and "LIFESPAN SHUTDOWN" in out  # done before the arbiter's deadline


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT])
def test_sigquit_and_sigint_stop_at_once(sig):
    with Gunicorn() as srv:
        slow = InFlight(srv.port, "/sleep?s=20")
        time.sleep(0.3)
        started = time.monotonic()
        srv.send_signal(sig)
        assert srv.wait(10) == 0
        assert time.monotonic() - started < 1.5
        assert not isinstance(slow.join(), tuple)
        assert "LIFESPAN SHUTDOWN" in srv.output()


def test_max_requests_replaces_the_worker_without_failed_requests():
    with Gunicorn("--max-requests", "10") as srv:
        first = srv.worker_pids()[0]
        with RequestLoop(srv.port) as loop:
            wait_until(lambda: loop.ok >= 40, 30,
                       lambda: f"40 requests served ({loop.ok}, {loop.failures[:3]})", interval=0.05)
        assert loop.failures == [], loop.failures[:5]
        assert len(set(loop.pids)) >= 3 and first in loop.pids
        out = srv.output()
        assert "Maximum request limit reached" in out
        assert "Booting worker" in out and out.count("Booting worker") >= 3


def test_unix_socket_bind_and_gunicorn_reload(tmp_path):
    """Gunicorn's listeners of any kind (here a UNIX socket) and its --reload (the worker stops
    gracefully when Gunicorn's reloader clears ``alive``; the arbiter starts a new one)."""
    app = tmp_path / "reloaded_app.py"
    app.write_text((Path(__file__).parent / "apps" / "recycle_apps.py").read_text())
    path = tmp_path / "g.sock"
    from gunicorn.config import Config

    extra = ["--no-control-socket"] if "control_socket_disable" in Config().settings else []
    args = ["-k", WORKER, "-b", f"unix:{path}", "--reload", "--pythonpath", str(tmp_path), "--graceful-timeout", "3",
            *extra, "reloaded_app:app"]
    with running(*args, port=False, ready=1, command=[sys.executable, "-m", "gunicorn"]) as srv:
        assert f"Tether running on unix:{path}" in srv.output()
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, timeout=5) as client:
            first = client.get("http://test/").json()["pid"]
            time.sleep(1.1)  # a later modification time than the import's
            app.write_text(app.read_text() + "\n# changed\n")
            srv.wait_for("Worker reloading", timeout=15)
            srv.wait_ready(2, timeout=15)
            wait_until(lambda: not pid_alive(first), 10, "the first worker gone", interval=0.05)
            assert client.get("http://test/").json()["pid"] != first
