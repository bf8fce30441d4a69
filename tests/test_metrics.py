"""--metrics: Prometheus exposition from a real Tether (one process, and a supervisor with two
workers), scraped with httpx, parsed with prometheus_client's parser, linted with promtool; and
the counts a killed or recycled worker leaves behind are kept."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

import tether
from tests.support.http1 import raw_request
from tests.support.process import assert_one_error_line, run_cli, running
from tests.support.server import serve
from tests.support.waiting import free_port, wait_until
from tether.metrics import recorder
from tether.metrics.recorder import ABANDONED, BUCKETS, Recorder, new_slot
from tether.metrics.totals import Totals
from tether.protocols.http2 import H2Stream
from tether.protocols.websocket import WebSocketProtocol

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------------- scraping
class Scrape:
    """One GET /metrics: the raw text and its samples, {(name, sorted labels): value}."""

    def __init__(self, port: int) -> None:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200, response
        self.content_type = response.headers["content-type"]
        self.text = response.text
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in self.families.values() for s in f.samples}

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def counters(self) -> dict:
        """Every sample of a counter or histogram family: what must never go down."""
        kinds = {name for name, f in self.families.items() if f.type in ("counter", "histogram")}
        return {key: value for key, value in self.samples.items()
                if any(key[0] == kind or key[0].startswith(kind + "_") for kind in kinds)}


def scrape_until(port: int, predicate, timeout: float = 10.0) -> Scrape:
    """Scrape until ``predicate(scrape)`` holds; that scrape (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        s = Scrape(port)
        if predicate(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s; last scrape:\n{s.text}")
        time.sleep(0.05)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bash .ci/setup installs it (from Debian's prometheus package)"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def abandon(port: int, path: str, srv=None, started: str | None = None, count: int = 1) -> None:
    """Send a request and close the connection once the app has started it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    if srv is not None and started:
        srv.wait_for(started, count=count, timeout=10)
    else:
        time.sleep(0.3)
    sock.close()


# ---------------------------------------------------------------------- sans-I/O: the recorder and the totals
HTTP1 = object()  # (a connection of a type the recorder does not know is HTTP/1.1)
HTTP2 = H2Stream.__new__(H2Stream)
WEBSOCKET = WebSocketProtocol.__new__(WebSocketProtocol)


def test_request_done_classes_buckets_and_sums():
    rec = Recorder()
    rec.attach(bytearray(recorder.SLOT_BYTES), supervised=False)
    rec.request_done(HTTP1, 200, 0.0004)
    rec.request_done(HTTP1, 204, 0.0005)  # on the bound: le="0.0005" holds it
    rec.request_done(HTTP2, 503, 2.0)
    rec.request_done(HTTP1, 499, 0.01)  # an app's own 499 is a 4xx ...
    rec.request_done(HTTP1, ABANDONED, 100.0)  # ... the abandoned class is for clients that left
    rec.request_done(WEBSOCKET, 101, 30.0)  # (a session: counted, not timed)
    rec.request_done(WEBSOCKET, 1006, 0.1)  # no answer to the handshake: the client left first
    assert not any(rec.ints.tolist()) and not any(rec.floats.tolist())  # published once a second ...
    rec.flush()  # ... by the worker's tick (and when it stops)
    counted = {i: n for i, n in enumerate(rec.ints[:recorder.COUNTERS].tolist()) if n}
    index = recorder.request_index
    assert counted == {
        index(0, 1, 0): 2,  # http1 2xx, first bucket
        index(1, 4, BUCKETS.index(2.5)): 1,
        index(0, 3, BUCKETS.index(0.01)): 1,
        index(0, 5, len(BUCKETS)): 1,  # 100 s: only +Inf
        index(2, 0, 0): 1,
        index(2, 5, 0): 1,
    }
    assert rec.floats[recorder.DURATION_SUM] == 0.0004 + 0.0005 + 0.01 + 100.0
    assert rec.floats[recorder.DURATION_SUM + 1] == 2.0


def test_phases_match_the_stats_phases():
    from tether.logs import PHASES

    assert recorder.PHASES == PHASES


def test_totals_keep_a_dead_workers_counts_and_never_go_down():
    totals = Totals()
    slots = {pid: new_slot() for pid in (1, 2, 3)}
    workers = {}
    for pid, slot in slots.items():
        totals.add(pid, slot)
        workers[pid] = Recorder()
        workers[pid].attach(slot, supervised=True)  # as the forked worker does
    for _ in range(3):
        workers[1].request_done(HTTP1, 200, 0.1)
    workers[2].request_done(HTTP2, 200, 0.3)
    workers[2].abandoned(0.25, cancelled=True)
    workers[2].ints[recorder.IN_FLIGHT] = 4
    workers[2].exiting("max_requests")
    workers[3].request_done(HTTP1, 200, 1e-17)  # (a float sum's order would show here)
    for worker in workers.values():
        worker.flush()
    before = totals.snapshot()
    ok = recorder.request_index(0, 1, BUCKETS.index(0.1))
    assert before.ints[ok] == 3 and before.workers == 3 and before.ints[recorder.IN_FLIGHT] == 4
    workers[2].detach()
    assert totals.fold(2) == "max_requests"  # the reason it gave, for the restart's label
    after = totals.snapshot()
    assert after.workers == 2
    assert after.ints[:recorder.COUNTERS] == before.ints[:recorder.COUNTERS]  # nothing lost, nothing twice
    assert after.floats == before.floats  # summed exactly, whatever the order
    assert after.ints[recorder.IN_FLIGHT] == 0  # a dead worker has nothing in flight
    assert after.floats[recorder.ABANDONED_SECONDS] == 0.25 and after.ints[recorder.CANCELLED_REQUESTS] == 1
    workers[1].request_done(HTTP1, 200, 0.1)
    workers[1].flush()
    assert totals.snapshot().ints[ok] == 4
    assert totals.fold(2) == ""  # twice: nothing happens
    totals.restarted("crashed")
    assert totals.snapshot().restarts["crashed"] == 1


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize("args, fragment", [
    (["--metrics-port", "70000"], "--metrics-port must be between 0 and 65535, not 70000"),
    (["--metrics-port", "-1"], "--metrics-port must be between 0 and 65535"),
    (["--metrics-port", "nine"], "'nine' is not a valid integer"),
    (["--metrics-address", "not an address"], "--metrics-address must be an IP address"),
    (["--metrics-address", "300.1.1.1"], "--metrics-address must be an IP address"),
])
def test_bad_metrics_options_are_one_error_line(args, fragment):
    result = run_cli("metrics_app:app", "--metrics", *args, "--port", str(free_port()))
    assert_one_error_line(result, fragment)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_port_in_use_is_one_error_line(workers):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("metrics_app:app", "--metrics", "--metrics-port", str(port), "--workers", workers,
                         "--port", str(free_port()))
    assert_one_error_line(result, f"--metrics: could not listen on 127.0.0.1:{port}", "in use")


def test_environment_variables_turn_metrics_on():
    mport = free_port()
    with running("metrics_app:app", env={"TETHER_METRICS": "true", "TETHER_METRICS_PORT": str(mport)}) as srv:
        assert raw_request(srv.port)[0] == 200
        scrape_until(mport, lambda s: s("tether_requests_total", protocol="http1", status_class="2xx") == 1)


def test_off_by_default():
    mport = free_port()
    with running("metrics_app:app", env={"TETHER_METRICS_PORT": str(mport)}) as srv:
        assert raw_request(srv.port)[0] == 200
        assert "Metrics on" not in srv.output()
        assert not _listening(mport)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------- one process
def test_single_process_counts_every_protocol_and_the_abandoned():
    mport = free_port()
    with running("metrics_app:app", "--metrics", "--metrics-port", str(mport)) as srv:
        assert f"Metrics on http://127.0.0.1:{mport}/metrics" in srv.output()
        for path, status in [("/", 200), ("/", 200), ("/status/204", 204), ("/status/302", 302),
                             ("/status/404", 404), ("/status/499", 499), ("/status/503", 503)]:
            assert raw_request(srv.port, path=path)[0] == status
        with httpx.Client(http1=False, http2=True, timeout=5) as client:  # h2c, prior knowledge
            for _ in range(2):
                assert client.get(f"{srv.url}/").status_code == 200
        with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=5, close_timeout=5) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"

        # A request held open: in flight and its connection are seen (sampled once a second).
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b"GET /wait HTTP/1.1\r\nHost: test\r\n\r\n")
        srv.wait_for("WAIT START")
        held = scrape_until(mport, lambda s: s("tether_requests_in_flight") == 1, timeout=5)
        assert held("tether_connections_open", protocol="http1") == 1
        sock.close()  # ... and abandoned: 499, before_response, 0.2 s of work after the client left
        srv.wait_for("WAIT DONE")

        s = scrape_until(mport, lambda s: s("tether_abandoned_requests_total") == 1
                         and s("tether_requests_in_flight") == 0 and s("tether_connections_open", protocol="http1") == 0,
                         timeout=5)
        assert s.content_type == "text/plain; version=0.0.4; charset=utf-8"
        requests = {(p, c): s("tether_requests_total", protocol=p, status_class=c)
                    for p in ("http1", "http2", "websocket") for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "499")}
        assert {k: v for k, v in requests.items() if v} == {
            ("http1", "2xx"): 3, ("http1", "3xx"): 1, ("http1", "4xx"): 2, ("http1", "5xx"): 1, ("http1", "499"): 1,
            ("http2", "2xx"): 2, ("websocket", "1xx"): 1,
        }
        assert s("tether_request_duration_seconds_count", protocol="http1") == 8
        assert s("tether_request_duration_seconds_count", protocol="http2") == 2
        assert s("tether_request_duration_seconds_bucket", protocol="http1", le="+Inf") == 8
        assert s("tether_request_duration_seconds_bucket", protocol="http1", le="0.1") == 7  # all but /wait
        assert s("tether_request_duration_seconds_sum", protocol="http1") >= 0.2
        buckets = [s("tether_request_duration_seconds_bucket", protocol="http1", le=le)
                   for le in [*(tether_le(b) for b in BUCKETS), "+Inf"]]
        assert buckets == sorted(buckets)
        assert s("tether_disconnects_total", phase="before_response") == 1
        assert sum(s("tether_disconnects_total", phase=p) for p in ("mid_body", "mid_stream", "websocket")) == 0
        assert 0.2 <= s("tether_abandoned_work_seconds_total") < 5
        assert s("tether_cancelled_requests_total") == 0
        assert s("tether_deadline_timeouts_total") == 0
        assert s("tether_workers") == 1
        assert all(s("tether_worker_restarts_total", reason=r) == 0
                   for r in ("crashed", "max_requests", "reload", "recycle", "exited"))
        for family in ("tether_requests", "tether_disconnects", "tether_abandoned_requests",
                       "tether_abandoned_work_seconds", "tether_cancelled_requests", "tether_deadline_timeouts",
                       "tether_worker_restarts"):
            assert s.families[family].type == "counter" and s.families[family].documentation
        promtool_check(s.text)
        # Prometheus asks for OpenMetrics first: prometheus_client negotiates it, and its strict parser
        # reads the same values (promtool check metrics only reads the text format).
        om = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=5,
                       headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(om.text)}
        assert {s.value for s in families["tether_abandoned_requests"].samples} == {1}
        assert families["tether_request_duration_seconds"].type == "histogram"


def tether_le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


def test_in_process_cancel_policy_is_counted():
    """tether.serve() in this process (Server in a thread) serves its own metrics too."""
    started = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started.set()
        await receive()
        await asyncio.sleep(30)  # not listening: the cancel policy cancels this task when the client leaves

    mport = free_port()
    before = tether.stats()["cancelled_requests"]
    with serve(app, metrics=True, metrics_port=mport, on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert started.wait(5)
        sock.close()
        s = scrape_until(mport, lambda s: s("tether_cancelled_requests_total") == 1
                         and s("tether_requests_total", protocol="http1", status_class="499") == 1)
        assert s("tether_abandoned_requests_total") == 1
        assert s("tether_requests_total", protocol="http1", status_class="499") == 1
        assert tether.stats()["cancelled_requests"] == before + 1  # tether.stats() counts on as before
    assert not _listening(mport)  # the listener stops with the server


# ---------------------------------------------------------------------- workers
def test_two_workers_are_summed_and_a_killed_worker_loses_nothing():
    mport = free_port()
    with running("edge_apps:info", "--workers", "2", "--metrics", "--metrics-port", str(mport), ready=2) as srv:
        workers = set(srv.worker_pids())
        pids = set()
        sent = 0
        while pids != workers and sent < 400:  # new connections until both workers have answered
            pids.add(int(httpx.get(f"{srv.url}/", timeout=5).json()["pid"]))
            sent += 1
        assert pids == workers, (pids, workers)
        abandon(srv.port, "/sleep?s=0.3", srv, "SLEEP START")
        srv.wait_for("SLEEP DONE")
        s = scrape_until(mport, lambda s: s("tether_abandoned_requests_total") == 1
                         and s("tether_requests_total", protocol="http1", status_class="2xx") == sent
                         and s("tether_requests_total", protocol="http1", status_class="499") == 1)
        assert s("tether_requests_total", protocol="http1", status_class="499") == 1
        assert s("tether_workers") == 2
        promtool_check(s.text)

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        srv.wait_for(f"Worker {victim} died", timeout=10)
        srv.wait_ready(3, timeout=20)

        after = scrape_until(mport, lambda s: s("tether_worker_restarts_total", reason="crashed") == 1
                             and s("tether_workers") == 2)
        changed = {key for key, value in after.counters().items() if s.counters()[key] != value}
        assert changed == {("tether_worker_restarts_total", (("reason", "crashed"),))}  # the victim's counts stay
        assert after("tether_requests_total", protocol="http1", status_class="2xx") == sent
        for _ in range(10):
            assert raw_request(srv.port)[0] == 200
        last = scrape_until(mport, lambda s: s("tether_requests_total", protocol="http1", status_class="2xx")
                            == sent + 10)
        promtool_check(last.text)


def test_totals_never_go_down_while_workers_churn():
    """Requests, recycling (--limit-max-requests), SIGKILLs and a SIGHUP, scraped all along."""
    mport = free_port()
    with running("edge_apps:info", "--workers", "2", "--limit-max-requests", "8", "--metrics",
                 "--metrics-port", str(mport), "--no-access-log", ready=2) as srv:
        scrapes: list[dict] = []
        stop = threading.Event()

        def scraper():
            while not stop.is_set():
                try:
                    scrapes.append(Scrape(mport).counters())
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        ok = 0
        try:
            for round_ in range(3):
                for _ in range(25):
                    try:
                        ok += raw_request(srv.port, timeout=5)[0] == 200
                    except (OSError, AssertionError):
                        pass  # a request on a worker killed under it
                if round_ == 1:
                    srv.send_signal(signal.SIGHUP)
                    srv.wait_for("Received SIGHUP")
                else:  # kill the worker that just answered: it is alive (and maybe recycling)
                    status, _, body = raw_request(srv.port, timeout=5)
                    ok += status == 200
                    # (a killed worker loses what it has not published yet: at most its last second)
                    scrape_until(mport, lambda s: s("tether_requests_total", protocol="http1", status_class="2xx")
                                 == ok)
                    os.kill(json.loads(body)["pid"], signal.SIGKILL)
                time.sleep(0.5)
            # (not "reload >= 1": a worker that recycles for --limit-max-requests before its turn in
            # the rolling restart is counted as max_requests, truthfully; test_sighup_counts_a_reload_per_worker
            # counts reloads without that race)
            final = scrape_until(mport, lambda s: s("tether_worker_restarts_total", reason="crashed") == 2
                                 and s("tether_workers") == 2, timeout=20)
        finally:
            stop.set()
            thread.join(10)
        assert len(scrapes) > 20
        for earlier, later in zip(scrapes, scrapes[1:] + [final.counters()]):
            for key, value in earlier.items():
                assert later[key] >= value, (key, value, later[key])
        assert final("tether_requests_total", protocol="http1", status_class="2xx") == ok
        # 8 requests per worker; 4 workers replaced by a kill or the reload (<= 7 unused each) and 2 alive
        # (<= 7 each): the rest of the requests used up whole workers.
        assert ok >= 70
        assert final("tether_worker_restarts_total", reason="max_requests") >= (ok - 6 * 7) // 8
        assert final("tether_worker_restarts_total", reason="exited") == 0
        promtool_check(final.text)


def test_sighup_counts_a_reload_per_worker():
    mport = free_port()
    with running("edge_apps:info", "--workers", "2", "--metrics", "--metrics-port", str(mport), ready=2) as srv:
        srv.send_signal(signal.SIGHUP)
        srv.wait_ready(4, timeout=30)
        s = scrape_until(mport, lambda s: s("tether_worker_restarts_total", reason="reload") == 2, timeout=20)
        assert s("tether_worker_restarts_total", reason="crashed") == 0
        assert s("tether_workers") == 2


RELOAD_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": {body!r}}})
"""


def _text(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def test_reload_keeps_the_counts_and_counts_the_reload(tmp_path):
    (tmp_path / "reload_app.py").write_text(RELOAD_APP.format(body=b"version 1"))
    mport = free_port()
    with running("reload_app:app", "--reload", "--metrics", "--metrics-port", str(mport), cwd=tmp_path) as srv:
        for _ in range(3):
            assert httpx.get(srv.url, timeout=5).text == "version 1"
        (tmp_path / "reload_app.py").write_text(RELOAD_APP.format(body=b"version 2"))
        wait_until(lambda: _text(srv.url) == "version 2", timeout=10, what="the reloaded app")
        s = scrape_until(mport, lambda s: s("tether_worker_restarts_total", reason="reload") == 1
                         and s("tether_requests_total", protocol="http1", status_class="2xx") >= 4)  # 3 + version 2
        assert s("tether_workers") == 1


def test_lifetime_recycling_is_counted_and_loses_nothing():
    mport = free_port()
    with running("edge_apps:info", "--workers", "2", "--workers-lifetime", "2", "--metrics", "--metrics-port",
                 str(mport), "--no-access-log", ready=2) as srv:
        ok = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            ok += raw_request(srv.port, timeout=5)[0] == 200
            time.sleep(0.01)
        s = scrape_until(mport, lambda s: s("tether_worker_restarts_total", reason="recycle") >= 2
                         and s("tether_requests_total", protocol="http1", status_class="2xx") == ok, timeout=10)
        assert s("tether_worker_restarts_total", reason="crashed") == 0
        assert s("tether_worker_restarts_total", reason="reload") == 0
        assert s("tether_workers") >= 2
        promtool_check(s.text)


def test_deadline_timeouts_are_counted():
    mport = free_port()
    with running("metrics_app:app", "--timeout-request", "0.3", "--metrics", "--metrics-port", str(mport)) as srv:
        status, _, _ = raw_request(srv.port, path="/wait", timeout=10)  # the app waits for a disconnect
        assert status == 504
        s = scrape_until(mport, lambda s: s("tether_deadline_timeouts_total") == 1
                         and s("tether_requests_total", protocol="http1", status_class="5xx") == 1)
        assert s("tether_requests_total", protocol="http1", status_class="499") == 0
        assert s("tether_abandoned_requests_total") == 0  # (a deadline is not a client that left)
