"""Real components started by the acceptance tests, each stopped and removed afterwards:

* ``postgres_cluster``: a throwaway PostgreSQL cluster on 127.0.0.1 (the ``postgres`` fixture,
  tests/stacks.py and bench/abandoned.py);
* ``run_nginx``: nginx in front of an upstream, from a generated minimal config.

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
    upstream tether {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tether;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
            # proxy_ignore_client_abort is left at its default (off): a client that leaves
            # makes nginx close the upstream connection, which is what Tether must notice.
        }}
    }}
}}
"""


@contextlib.contextmanager
def run_nginx(upstream_port: int) -> Iterator[tuple[int, Path]]:
    """nginx proxying 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; yields (port, tmp dir)."""
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
            conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, upstream=upstream_port, extra_temp="\n".join(extra)))
            check = subprocess.run([str(NGINX), "-t", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                                   capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            unknown = next((line for line in extra if f'"{line.split()[0]}"' in check.stderr), None)
            if unknown is None:
                pytest.fail(f"nginx rejected the generated config:\n{check.stderr}")
            extra.remove(unknown)
        proc = subprocess.Popen([str(NGINX), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited with {proc.returncode}: {proc.stdout.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx is not listening after 10 s")
                time.sleep(0.05)
        yield port, tmp
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
