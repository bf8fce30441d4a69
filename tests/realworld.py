"""Shared helpers for the acceptance tests that use real components (tests/test_acceptance_*.py).

* ``Recorder``: what an app did and when (``time.monotonic()``, comparable across threads).
* ``send_request`` / ``leave``: a raw-socket client that sends a request and later closes.
* ``postgres``: a session fixture running a throwaway PostgreSQL cluster on 127.0.0.1
  (tests/stacks.py ``postgres_cluster``).
* ``run_nginx``, ``run_haproxy``, ``run_caddy``: each proxy in front of an upstream, from a
  generated minimal config on loopback ports.
* ``netns_link``: a network namespace joined to the host by a veth pair, for dead peers.

Every wait is bounded; every process and namespace started here is stopped or removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import free_port
from tests.stacks import PgCluster, leave, postgres_cluster, postgres_missing, send_request  # noqa: F401

NGINX = Path("/usr/sbin/nginx")


# ---------------------------------------------------------------------- recording what the app did
class Recorder:
    """Thread-safe named events with the monotonic time they first happened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self.times: dict[str, float] = {}
        self.values: dict[str, Any] = {}

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def mark(self, name: str, value: Any = None) -> None:
        event = self._event(name)
        with self._lock:
            if name not in self.times:
                self.times[name] = time.monotonic()
                self.values[name] = value
        event.set()

    def wait(self, name: str, timeout: float) -> bool:
        return self._event(name).wait(timeout)

    def seen(self, name: str) -> bool:
        return self._event(name).is_set()

    def since(self, name: str, start: float) -> float:
        """Milliseconds from ``start`` (a monotonic time) to event ``name``."""
        return (self.times[name] - start) * 1000


def lifespan_ok(startup: Callable[[], Any] | None = None, shutdown: Callable[[], Any] | None = None) -> Callable:
    """A lifespan handler running optional async startup/shutdown hooks."""

    async def handle(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if startup is not None:
                        await startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if shutdown is not None:
                    await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return handle


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------- a client that leaves; PostgreSQL
# (both live in tests/stacks.py, which bench/abandoned.py shares; re-exported here for the tests)
@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:<free port>, trust auth, for the session."""
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    with postgres_cluster() as cluster:
        yield cluster


# ---------------------------------------------------------------------- nginx
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
{extra_temp}
    upstream tether {{ server 127.0.0.1:{upstream}; {upstream_extra} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
{location}
        }}
    }}
}}
"""
# The location of the first acceptance test: HTTP/1.1 to Tether, one connection per request.
NGINX_LOCATION = """\
            proxy_pass http://tether;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
            # proxy_ignore_client_abort is left at its default (off): a client that leaves
            # makes nginx close the upstream connection, which is what Tether must notice."""


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_listening(proc: subprocess.Popen, port: int, what: str, log: Path, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            output = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"{what} exited with {proc.returncode}: {output[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} is not listening after 10 s")
            time.sleep(0.05)


@contextlib.contextmanager
def run_nginx(upstream_port: int, location: str = NGINX_LOCATION, upstream_extra: str = "") -> Iterator[tuple[int, Path]]:
    """nginx proxying 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; yields (port, tmp dir).

    ``location``: the directives of ``location /`` (proxy_pass http://tether; ...);
    ``upstream_extra``: more directives of the ``upstream tether`` block (``keepalive 8;``)."""
    if not NGINX.exists():
        pytest.skip(f"nginx not installed ({NGINX}): .ci/run installs nginx-light")
    tmp = Path(tempfile.mkdtemp(prefix="tether-nginx-"))
    os.chmod(tmp, 0o755)  # worker processes may run as an unprivileged user
    port = free_port()
    # nginx-light may lack the fastcgi/uwsgi/scgi modules: only name temp paths that exist.
    extra = []
    for module in ("fastcgi", "uwsgi", "scgi"):
        extra.append(f"    {module}_temp_path {tmp}/{module};")
    conf = tmp / "nginx.conf"
    proc = None
    try:
        for attempt in range(len(extra) + 1):
            conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, upstream=upstream_port, extra_temp="\n".join(extra),
                                              location=location, upstream_extra=upstream_extra))
            check = subprocess.run([str(NGINX), "-t", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                                   capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            unknown = next((line for line in extra if f'"{line.split()[0]}"' in check.stderr), None)
            if unknown is None:
                pytest.fail(f"nginx rejected the generated config:\n{check.stderr}")
            extra.remove(unknown)
        proc = subprocess.Popen([str(NGINX), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(proc, port, "nginx", tmp / "error.log")
        yield port, tmp
    finally:
        _stop(proc)  # SIGTERM: fast shutdown
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- HAProxy
HAPROXY = Path("/usr/sbin/haproxy")
HAPROXY_CONF = """\
global
    log stderr format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{defaults_extra}
frontend fe
    bind {bind}
    default_backend be
backend be
{backend_extra}
    server tether 127.0.0.1:{upstream} {server_options}
"""


@contextlib.contextmanager
def run_haproxy(upstream_port: int, server_options: str = "", backend_extra: str = "", defaults_extra: str = "",
                host: str = "127.0.0.1") -> Iterator[tuple[int, Path]]:
    """HAProxy (mode http) on <host>:<port> in front of 127.0.0.1:<upstream_port>; yields (port, tmp dir).

    ``server_options`` go on the ``server`` line (``send-proxy-v2 ssl verify none``); its log
    (one line per request, httplog format) is ``tmp/haproxy.log``."""
    if not HAPROXY.exists():
        pytest.skip(f"HAProxy not installed ({HAPROXY}): .ci/setup installs haproxy")
    tmp = Path(tempfile.mkdtemp(prefix="tether-haproxy-"))
    port = free_port()
    conf = tmp / "haproxy.cfg"
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    conf.write_text(HAPROXY_CONF.format(bind=bind, upstream=upstream_port, server_options=server_options,
                                        backend_extra=backend_extra, defaults_extra=defaults_extra))
    log = tmp / "haproxy.log"
    proc = None
    try:
        check = subprocess.run([str(HAPROXY), "-c", "-q", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            pytest.fail(f"HAProxy rejected the generated config:\n{check.stdout}{check.stderr}")
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        _wait_listening(proc, port, "HAProxy", log, host)
        yield port, tmp
    finally:
        _stop(proc, signal.SIGUSR1)  # soft stop: the log is flushed
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- Caddy
CADDY = Path("/usr/bin/caddy")
CADDYFILE = """\
{{
    admin off
    auto_https off
}}
http://:{port} {{
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:{upstream} {{
{proxy_extra}
    }}
}}
"""


@contextlib.contextmanager
def run_caddy(upstream_port: int, proxy_extra: str = "") -> Iterator[tuple[int, Path]]:
    """Caddy's reverse_proxy on 127.0.0.1:<port> (any Host; admin API off, no automatic HTTPS)
    in front of 127.0.0.1:<upstream_port>; yields (port, tmp dir)."""
    if not CADDY.exists():
        pytest.skip(f"Caddy not installed ({CADDY}): .ci/setup installs caddy")
    tmp = Path(tempfile.mkdtemp(prefix="tether-caddy-"))
    port = free_port()
    conf = tmp / "Caddyfile"
    conf.write_text(CADDYFILE.format(port=port, upstream=upstream_port, proxy_extra=proxy_extra))
    log = tmp / "caddy.log"
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config")}
    proc = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(CADDY), "run", "--config", str(conf), "--adapter", "caddyfile"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        _wait_listening(proc, port, "Caddy", log)
        yield port, tmp
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- network namespaces
@dataclass
class NetnsLink:
    """A namespace ``ns`` whose device ``ns_dev`` (``client_addr``) is wired to ``host_dev`` (``host_addr``)."""

    ns: str
    host_dev: str
    ns_dev: str
    host_addr: str
    client_addr: str

    def exec(self, *args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return _ip("netns", "exec", self.ns, *args, timeout=timeout, check=check)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kwargs)

    def pull_cable(self) -> None:
        """Set the namespace's end of the link down: no FIN, no RST, nothing gets through any more."""
        self.exec("ip", "link", "set", self.ns_dev, "down")


def _ip(*args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_link_local_subnet() -> int:
    """A 169.254.N.0/30 that no interface on the host uses (other runs may hold one)."""
    used = _ip("-o", "-4", "addr", "show", check=False).stdout
    start = os.getpid() % 200
    for offset in range(200):
        third = 20 + (start + offset) % 200
        if f"169.254.{third}." not in used:
            return third
    raise RuntimeError("no free 169.254.N.0/30 subnet")


@contextlib.contextmanager
def netns_link() -> Iterator[NetnsLink]:
    """Create the namespace and veth pair (root only); always remove them afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed: .ci/run installs it")
    tag = f"{os.getpid() % 100000}{threading.get_ident() % 10}"
    ns = f"tether-dp-{tag}"
    host_dev, ns_dev = f"tdh{tag}"[:15], f"tdn{tag}"[:15]
    created_ns = created_link = False
    try:
        result = _ip("netns", "add", ns, check=False)
        if result.returncode != 0:
            pytest.skip(f"ip netns add failed: {result.stderr.strip()}")
        created_ns = True
        result = _ip("link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot create a veth pair: {result.stderr.strip()}")
        created_link = True
        third = _free_link_local_subnet()
        host_addr, client_addr = f"169.254.{third}.1", f"169.254.{third}.2"
        _ip("link", "set", ns_dev, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        link = NetnsLink(ns, host_dev, ns_dev, host_addr, client_addr)
        link.exec("ip", "addr", "add", f"{client_addr}/30", "dev", ns_dev)
        link.exec("ip", "link", "set", ns_dev, "up")
        link.exec("ip", "link", "set", "lo", "up")
        # Wait until the pair is usable (DAD does not apply to IPv4, but carrier can lag).
        if not wait_until(lambda: link.exec("ping", "-c", "1", "-W", "1", host_addr, check=False).returncode == 0
                          if shutil.which("ping") else True, timeout=5, interval=0.1):
            raise RuntimeError("the veth pair does not pass packets")
        yield link
    finally:
        if created_ns:
            _ip("netns", "del", ns, check=False)  # takes the namespace's end of the veth with it
        if created_link:
            _ip("link", "del", host_dev, check=False)  # gone already if the pair went with the ns
