"""Proxies in front of Tether: does a client leaving the proxy reach the app, and how fast?

Shared by tests/test_acceptance_proxies.py (the behaviour, a few trials per case, asserted) and
bench/proxies.py (the figures in README, N trials per case). One in-process Tether serves
``measuring_app``; each ``ProxySetup`` starts a real proxy (nginx, HAProxy, Caddy) in front of
it from a generated config on loopback ports; ``trial`` sends one request through the proxy,
waits until the request is in the phase under test, closes the client socket (FIN) and
returns how many milliseconds passed until the app was told (``tether.disconnect`` set, or
``send()`` raising), both read from ``time.monotonic()`` in this process, or None if the app
was not told within ``patience`` seconds.

Phases:
* ``before_response``: the request is complete and the app is working on it, nothing sent yet
  (the common case: a long query, a slow computation);
* ``idle_stream``: a streamed response (SSE) has started and is quiet between events;
* ``active_stream``: a streamed response sends an event every 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from tether import ClientDisconnected
from tests.support.components import run_caddy, run_haproxy, run_nginx

PHASES = ("before_response", "idle_stream", "active_stream")
PATHS = {"before_response": "/before", "idle_stream": "/idle", "active_stream": "/active"}
EVENT_INTERVAL = 0.1  # seconds between two events of the active stream


# ---------------------------------------------------------------------- the app
class Board:
    """What the app saw, per trial id (thread-safe: the app runs in the server's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.told: dict[str, float] = {}
        self.clients: dict[str, Any] = {}  # trial id -> the scope's client (the proxy's side of the upstream connection)
        self.last_trial = ""  # the id of the latest trial() (set by the client side)

    def _event(self, trial_id: str) -> threading.Event:
        with self._lock:
            return self.started.setdefault(trial_id, threading.Event())

    def start(self, trial_id: str, client: Any) -> None:
        self.clients[trial_id] = client
        self._event(trial_id).set()

    def wait_started(self, trial_id: str, timeout: float) -> bool:
        return self._event(trial_id).wait(timeout)

    def tell(self, trial_id: str) -> None:
        with self._lock:
            self.told.setdefault(trial_id, time.monotonic())


def measuring_app(board: Board, patience: float) -> Any:
    """/before waits for the disconnect; /idle sends one event and waits; /active sends an event
    every 100 ms; /hello answers at once. An app not told within ``patience`` s completes its
    response and returns (so that nothing is left running between trials)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        trial_id = scope["query_string"].decode()
        board.start(trial_id, scope["client"])
        gone = scope["extensions"]["tether.disconnect"]
        if path == "/hello" or path not in PATHS.values():
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"hello"})
            return
        if path == "/before":
            try:
                await asyncio.wait_for(gone.wait(), patience)
                board.tell(trial_id)
            except asyncio.TimeoutError:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
                await send({"type": "http.response.body", "body": b"late"})
            return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no")]  # (nginx: pass each event on at once)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 0\n\n", "more_body": True})
        deadline = time.monotonic() + patience
        interval = EVENT_INTERVAL if path == "/active" else patience
        number = 0
        try:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(gone.wait(), min(interval, max(deadline - time.monotonic(), 0.001)))
                    board.tell(trial_id)
                    return
                except asyncio.TimeoutError:
                    pass
                if path == "/active":
                    number += 1
                    await send({"type": "http.response.body", "body": b"data: %d\n\n" % number, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except ClientDisconnected:
            board.tell(trial_id)

    return app


# ---------------------------------------------------------------------- the proxies
NGINX_PLAIN = "            proxy_pass http://tether;"
NGINX_HTTP11 = """\
            proxy_pass http://tether;
            proxy_http_version 1.1;
            proxy_set_header Connection "";"""


@dataclass(frozen=True)
class ProxySetup:
    name: str
    config: str  # the directives that matter, as README shows them
    start: Callable[[int], ContextManager[tuple[int, Any]]]  # upstream port -> (proxy port, tmp dir)
    told: dict = field(default_factory=dict)  # phase -> is the app told? (the documented fact the tests assert)


ALL = dict.fromkeys(PHASES, True)
SETUPS = [
    ProxySetup("nginx", "`proxy_pass http://tether;`",
               lambda up: run_nginx(up, location=NGINX_PLAIN), ALL),
    ProxySetup("nginx keepalive", '`keepalive 8;` in the upstream, `proxy_http_version 1.1;`, '
               '`proxy_set_header Connection "";`',
               lambda up: run_nginx(up, location=NGINX_HTTP11, upstream_extra="keepalive 8;"), ALL),
    ProxySetup("nginx ignore abort", "`proxy_ignore_client_abort on;`",
               lambda up: run_nginx(up, location=NGINX_PLAIN + "\n            proxy_ignore_client_abort on;"),
               {"before_response": False, "idle_stream": False, "active_stream": True}),
    ProxySetup("HAProxy", "`mode http`, defaults",
               lambda up: run_haproxy(up),
               {"before_response": False, "idle_stream": False, "active_stream": True}),
    ProxySetup("HAProxy abortonclose", "`option abortonclose`",
               lambda up: run_haproxy(up, defaults_extra="    option abortonclose"), ALL),
    ProxySetup("Caddy", "`reverse_proxy 127.0.0.1:8000`",
               lambda up: run_caddy(up), ALL),
]
BY_NAME = {setup.name: setup for setup in SETUPS}


# ---------------------------------------------------------------------- one trial
_ids = iter(range(1, 1 << 62))


def _drain(sock: socket.socket) -> None:
    """Read what has arrived, so that close() sends FIN (unread input would make it an RST)."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, InterruptedError, ConnectionError):
        while sock.recv(65536):
            pass


def trial(board: Board, proxy_port: int, phase: str, patience: float) -> float | None:
    """One client through the proxy, leaving in ``phase``: milliseconds until the app was told, or None."""
    trial_id = board.last_trial = f"t{next(_ids)}"
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    try:
        sock.sendall(f"GET {PATHS[phase]}?{trial_id} HTTP/1.1\r\nHost: example.org\r\n\r\n".encode())
        if not board.wait_started(trial_id, 10):
            raise AssertionError(f"the request did not reach the app through the proxy ({phase})")
        if phase == "before_response":
            time.sleep(0.05)  # (the app is waiting; nothing is on its way back)
        else:
            data = b""
            while b"data: 0" not in data:  # the stream has reached the client through the proxy
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"the proxy closed before the first event: {data!r}")
                data += chunk
            if phase == "idle_stream":
                time.sleep(0.05)
            else:
                time.sleep(EVENT_INTERVAL * 1.5)  # (events are flowing)
            _drain(sock)
    finally:
        left = time.monotonic()
        sock.close()
    deadline = left + patience
    while trial_id not in board.told and time.monotonic() < deadline:
        time.sleep(0.0005)
    told = board.told.get(trial_id)
    return None if told is None else (told - left) * 1000


def hello(board: Board, proxy_port: int) -> Any:
    """A normal request through the proxy; returns the scope's client (the upstream connection's far end)."""
    trial_id = f"h{next(_ids)}"
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(f"GET /hello?{trial_id} HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"), data[:300]
    return board.clients[trial_id]
