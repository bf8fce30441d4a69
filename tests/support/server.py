"""A real Tether on 127.0.0.1 for a test: in a thread of the test process (``serve``), or as a
``python -m tether`` subprocess (``cli_server``). Both stop what they started, within bounds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from tests.support.waiting import free_port, wait_for_port, wait_until
from tether.config import Config
from tether.server import Server
from tether.server.worker import new_event_loop

ROOT = Path(__file__).resolve().parents[2]


class RunningServer:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.server = server
        self.loop = loop
        self.thread = thread
        sockname = server.sockets[0].getsockname()
        self.host, self.port = ("127.0.0.1", sockname[1]) if isinstance(sockname, tuple) else (None, None)
        scheme = "https" if server.config.is_ssl else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    @property
    def state(self) -> Any:
        return self.server.state

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the server's loop and return its result (thread-safe)."""
        async def wrapper() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(5)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[RunningServer]:
    """Run Tether with ``app`` in a background thread on a free port."""
    options.setdefault("port", 0)
    options.setdefault("lifespan", "auto")
    options.setdefault("timeout_graceful_shutdown", 3)
    config = Config(app=app, **options)
    server = Server(config, app)
    loop = new_event_loop(config.loop)
    errors: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(install_signals=False))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and not errors and time.monotonic() < deadline:
        time.sleep(0.005)
    if errors:
        raise errors[0]
    assert server.started, "server did not start within 10 s"
    running = RunningServer(server, loop, thread)
    try:
        yield running
    finally:
        loop.call_soon_threadsafe(server.request_exit)
        thread.join(15)
        assert not thread.is_alive(), "server did not stop within 15 s"


def server_idle(srv: RunningServer, timeout: float = 5.0) -> None:
    """Every app task of the server has finished (so counters and logs are final)."""
    wait_until(lambda: srv.call(lambda: not srv.state.tasks), timeout, "no app task left")


@contextlib.contextmanager
def cli_server(*args: str, port: int | None = None, env: dict | None = None, cwd: str | Path | None = None,
               wait: bool = True) -> Iterator[tuple[subprocess.Popen, int]]:
    """Run ``python -m tether ARGS --port PORT`` as a subprocess; stops it with SIGTERM."""
    port = port or free_port()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "apps"), full_env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, text=True,
    )
    try:
        if wait:
            wait_for_port(port, proc=proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
