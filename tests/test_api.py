"""The Python API: tether.run(), await tether.serve(), tether.Config, tether.stats()."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import httpx
import pytest

import tether
from tests.support.http1 import answers
from tests.support.process import APPS, Tether, tether_env
from tests.support.waiting import free_port, wait_until
from tether import Config, ConfigError

pytestmark = pytest.mark.timeout(60)

LOGGERS = ("tether", "tether.error", "tether.access")


@pytest.fixture(autouse=True)
def restore_logging():
    """tether.serve() configures logging in this process: undo it, so later tests (caplog) see
    the loggers as they were."""
    saved = {name: logging.getLogger(name) for name in LOGGERS}
    state = {name: (list(lg.handlers), lg.propagate, lg.level, lg.disabled) for name, lg in saved.items()}
    yield
    for name, logger in saved.items():
        handlers, propagate, level, disabled = state[name]
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled
        logger.setLevel(level)

APP_SOURCE = """
import os
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                print("API STARTUP", flush=True)
                await send({"type": "lifespan.startup.complete"})
            else:
                print("API SHUTDOWN", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": b"from the api"})
"""


def python(code: str, port: int | None = None) -> Tether:
    """python -c CODE as a Tether-like subprocess (output to a file, own process group)."""
    return Tether(["-c", textwrap.dedent(code)], command=[sys.executable], port=port)


def run_script(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=tether_env(), stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------- tether.run
def test_run_app_object():
    port = free_port()
    proc = python(APP_SOURCE + f"\nimport tether\ntether.run(app, port={port}, access_log=False)\n", port=port)
    try:
        proc.wait_ready()
        response = httpx.get(proc.url, timeout=5)
        assert response.text == "from the api" and response.headers["x-pid"] == str(proc.pid)
        assert "API STARTUP" in proc.output()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "API SHUTDOWN" in proc.output()
        assert "GET / HTTP/1.1" not in proc.output()  # access_log=False was applied
    finally:
        proc.cleanup()


def test_run_import_string_with_workers():
    port = free_port()
    proc = python(f"import tether\ntether.run('edge_apps:info', port={port}, workers=2)\n", port=port)
    try:
        proc.wait_ready(2)
        pids = set(proc.worker_pids())
        assert len(pids) == 2 and proc.pid not in pids
        assert httpx.get(proc.url, timeout=5).json()["pid"] in pids
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.cleanup()


def test_run_with_options_as_keywords():
    port = free_port()
    code = f"""
        import tether
        tether.run("simple_apps:hello", port={port}, headers=["x-api: yes"], server_header=False,
                   root_path="/r", log_level="warning")
    """
    proc = python(code, port=port)
    try:
        proc.wait_serving(port)
        response = httpx.get(proc.url, timeout=5)
        assert response.headers["x-api"] == "yes" and "server" not in response.headers
        assert "Tether running on" not in proc.output()
    finally:
        proc.cleanup()


@pytest.mark.parametrize("call,fragment", [
    ("tether.run(app, port=PORT, unknown_option=1)", "unknown option(s): unknown_option"),
    ("tether.run(app, port=PORT, loop='tokio')", "--loop"),
    ("tether.run('no_such_module_xyz:app', port=PORT)", "no_such_module_xyz"),
    ("tether.run(app, port=PORT, workers=2)", "import string"),
    ("tether.run(app, port=BUSY)", "in use"),
])
def test_run_errors_are_one_line_and_exit_1(call, fragment):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = (APP_SOURCE + "\nimport tether\n"
                + call.replace("BUSY", str(busy.getsockname()[1])).replace("PORT", str(free_port())) + "\n")
        result = run_script(code)
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tether: error: ") and fragment in lines[0], result.stderr


# ---------------------------------------------------------------------- await tether.serve
def test_serve_inside_a_running_loop_in_a_subprocess():
    port = free_port()
    code = APP_SOURCE + f"""
import asyncio, httpx, tether

async def main():
    task = asyncio.create_task(tether.serve(app, tether.Config(port={port})))
    for _ in range(200):
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get("http://127.0.0.1:{port}/", timeout=5)
            break
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
    print("RESPONSE", response.status_code, response.text, flush=True)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    print("SERVE ENDED", flush=True)

asyncio.run(main())
"""
    result = run_script(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESPONSE 200 from the api" in result.stdout
    assert result.stdout.index("API STARTUP") < result.stdout.index("RESPONSE")
    assert result.stdout.index("API SHUTDOWN") < result.stdout.index("SERVE ENDED")  # shut down on cancel
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_with_signal_handlers_stops_on_sigterm():
    port = free_port()
    code = APP_SOURCE + f"""
import asyncio, tether
asyncio.run(tether.serve(app, tether.Config(port={port}), install_signal_handlers=True))
print("SERVE RETURNED", flush=True)
"""
    proc = python(code, port=port)
    try:
        proc.wait_ready()
        assert httpx.get(proc.url, timeout=5).text == "from the api"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        out = proc.output()
        assert "Shutting down" in out and "API SHUTDOWN" in out and "SERVE RETURNED" in out
    finally:
        proc.cleanup()


class ThreadedServe:
    """await tether.serve(...) on an event loop in a thread of this (the test) process."""

    def __init__(self, app, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.done = threading.Event()

        def target() -> None:
            asyncio.set_event_loop(self.loop)
            self.task = self.loop.create_task(tether.serve(app, config))
            try:
                self.loop.run_until_complete(self.task)
            except asyncio.CancelledError:
                pass
            except BaseException as exc:
                self.error = exc
            finally:
                self.loop.close()
                self.done.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if not self.done.is_set():
            self.loop.call_soon_threadsafe(lambda: self.task.cancel())  # type: ignore[union-attr]
        assert self.done.wait(15), "serve() did not end within 15 s of being cancelled"


async def _thread_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": threading.current_thread().name.encode()})


def test_serve_in_a_thread():
    port = free_port()
    served = ThreadedServe(_thread_app, Config(port=port, access_log=False))
    try:
        wait_until(lambda: answers(port) or served.done.is_set(), 10,
                   lambda: f"serving or done (error: {served.error!r})", interval=0.05)
        assert served.error is None
        body = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        assert body == served.thread.name and body != threading.current_thread().name
    finally:
        served.stop()
    assert served.error is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_import_string():
    port = free_port()
    served = ThreadedServe("simple_apps:hello", Config(port=port, app_dir=str(APPS), access_log=False))
    try:
        wait_until(lambda: answers(port) or served.done.is_set(), 10,
                   lambda: f"serving or done (error: {served.error!r})", interval=0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello, world"
    finally:
        served.stop()


def test_serve_raises_config_error_when_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        served = ThreadedServe(_thread_app, Config(port=busy.getsockname()[1]))
        assert served.done.wait(10)
    assert isinstance(served.error, ConfigError) and "in use" in str(served.error)


# ---------------------------------------------------------------------- Config and stats
def test_config_unknown_option_raises_config_error():
    with pytest.raises(ConfigError, match="unknown option.*unknown"):
        tether.Config(unknown=1)


@pytest.mark.parametrize("options,fragment", [
    ({"port": 70000}, "--port"),
    ({"port": -1}, "--port"),
    ({"loop": "tokio"}, "--loop"),
    ({"lifespan": "sometimes"}, "--lifespan"),
    ({"workers": 0}, "--workers"),
    ({"headers": ["no colon"]}, "--header"),
    ({"ssl_keyfile": "key.pem"}, "--ssl-certfile"),
    ({"access_log_format": "{unknown_field}"}, "--access-log-format"),
    ({"limit_max_requests": 0}, "--limit-max-requests"),
    ({"timeout_keep_alive": -1}, "--timeout-keep-alive"),
    ({"log_level": "loud"}, "--log-level"),
])
def test_config_validation(options, fragment):
    with pytest.raises(ConfigError) as info:
        Config(**options)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_config_defaults_match_the_cli():
    config = Config()
    assert (config.host, config.port, config.workers, config.lifespan, config.loop) == ("127.0.0.1", 8000, 1, "auto", "auto")
    assert config.timeout_graceful_shutdown == 30.0 and config.access_log and config.server_header


def test_stats_snapshot():
    snapshot = tether.stats()
    assert set(snapshot) >= {"requests", "disconnects", "disconnects_total", "abandoned_requests",
                             "abandoned_seconds", "cancelled_requests"}
    assert snapshot["disconnects_total"] == sum(snapshot["disconnects"].values())
    snapshot["requests"] = -1  # a copy: changing it changes nothing
    assert tether.stats()["requests"] != -1


def test_public_names():
    for name in tether.__all__:
        assert hasattr(tether, name)
    assert issubclass(tether.ClientDisconnected, OSError)
    assert tether.__version__
