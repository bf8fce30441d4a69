"""Waiting in tests: one ``wait_until``, and the ports a test server listens on.

Every wait here is bounded, and a wait that runs out fails the test with an AssertionError that
names what was awaited; a test that must check that something does *not* happen waits with
``time.sleep`` or a read timeout instead, and says so.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str | Callable[[], str] = "condition",
               interval: float = 0.01, between: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    After ``timeout`` seconds: AssertionError "<what> not reached within <timeout> s". ``what``
    may be a callable, called only then (to put the server's output or the last value seen in the
    message). Between polls the test sleeps ``interval`` seconds, or calls ``between`` (e.g. a
    client that reads from its socket for a moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"{described} not reached within {timeout} s")
        if between is not None:
            between()
        else:
            time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Something accepts on 127.0.0.1:``port``; AssertionError if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port} after {timeout}s")
