"""Real components started by the acceptance tests, each stopped and removed afterwards:

* ``postgres_cluster``: a throwaway PostgreSQL cluster on 127.0.0.1 (the ``postgres`` fixture,
  tests/stacks.py and bench/abandoned.py);
* ``run_nginx``, ``run_haproxy``, ``run_caddy``: nginx, HAProxy and Caddy in front of an
  upstream, each from a generated minimal config.

Every wait is bounded. A component that is not installed skips the test (.ci/setup installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.waiting import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NGINX = Path("/usr/sbin/nginx")


# ---------------------------------------------------------------------- PostgreSQL
@dataclass
class PgCluster:
    host: str
    port: int
    user: str = "postgres"
    database: str = "postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def conninfo(self, app_name: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.database} application_name={app_name}"


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the ``postgres`` OS user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def postgres_missing() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return "PostgreSQL not installed: .ci/setup installs it"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as the postgres user"
    return None


@contextlib.contextmanager
def postgres_cluster(max_connections: int = 100) -> Iterator[PgCluster]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:<free port>, trust auth; removed afterwards."""
    missing = postgres_missing()
    if missing:
        raise RuntimeError(missing)
    tmp = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    data = tmp / "data"
    log = tmp / "postgres.log"
    port = free_port()
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(tmp, "postgres", "postgres")
        initdb = subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync", "--no-instructions"]),
            capture_output=True, text=True, timeout=60,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr or initdb.stdout}")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={tmp} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   f"-c max_connections={max_connections}")
        ctl = subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30",
                          "-o", options, "start"]),
            capture_output=True, text=True, timeout=60,
        )
        started = ctl.returncode == 0
        if not started:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({ctl.returncode}): {ctl.stderr or ctl.stdout}\n{server_log}")
        yield PgCluster("127.0.0.1", port)
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True, timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)


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
