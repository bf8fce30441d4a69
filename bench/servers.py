"""The servers compared side by side: how to start each one on a port with an app, and stop it.

Every server runs from bench/.venv (bench/setup.sh), one worker, fresh for each measurement.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = BENCH / ".venv" / "bin"


def _bin(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def command(server: str, app: str, port: int) -> list[str]:
    host = "127.0.0.1"
    if server == "tether":
        return [_bin("tether"), app, "--host", host, "--port", str(port), "--no-access-log", "--log-level", "warning"]
    if server == "tether-metrics":  # (README "Metrics": the cost of --metrics, against "tether")
        return [*command("tether", app, port), "--metrics", "--metrics-port", str(free_port())]
    if server == "uvicorn":
        return [_bin("uvicorn"), app, "--host", host, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning"]
    if server == "hypercorn":
        return [_bin("hypercorn"), app, "--bind", f"{host}:{port}", "--log-level", "warning"]
    if server in ("granian", "granian-st"):
        extra = ["--runtime-mode", "st"] if server == "granian-st" else []
        return [_bin("granian"), "--interface", "asgi", "--host", host, "--port", str(port), "--workers", "1",
                "--log-level", "warning", *extra, app]
    if server in ("limit", "ws-limit"):
        script = "limit_server.py" if server == "limit" else "ws_ceiling.py"
        return [python(), str(BENCH / script), str(port)]
    raise ValueError(f"unknown server {server!r}")


def python() -> str:
    """The bench virtualenv's interpreter (this one when bench/setup.sh has not run)."""
    return str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    def __init__(self, server: str, app: str, env: dict | None = None) -> None:
        self.server = server
        self.port = free_port()
        self.proc = subprocess.Popen(
            command(server, app, self.port), cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{server} exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.3)  # let every worker thread/runtime finish starting
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{server} did not start within 20 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def versions() -> dict:
    python = VENV_BIN / "python"
    if not python.exists():
        return {}
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=60).stdout
    wanted = {"tether", "uvicorn", "granian", "hypercorn", "uvloop", "httptools", "h2", "websockets"}
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line and line.split("==")[0].lower() in wanted)


def machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "machine": platform.machine(), "versions": versions()}
