"""The servers compared side by side: how to start each one on a port with an app, and stop it.

Every server runs from the bench virtualenv the script itself runs in (bench/.venv-3.X, made by
bench/setup.sh on one interpreter), so all of them, Tether included, run on that interpreter:
one worker each, fresh for each measurement.
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
# The scripts run with the bench venv's python: its servers are beside it.
VENV_BIN = Path(sys.executable).parent


def _bin(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def command(server: str, app: str, port: int) -> list[str]:
    host = "127.0.0.1"
    if server == "tether":
        return [_bin("tether"), app, "--host", host, "--port", str(port), "--no-access-log", "--log-level", "warning"]
    if server.startswith("tether@"):  # another checkout's Tether, for before/after in one run
        return [python(), "-m", "tether", *command("tether", app, port)[1:]]
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
    if server == "gunicorn":
        # Gunicorn's own asyncio ASGI worker with uvloop and its C parser (gunicorn_h1c), as Uvicorn
        # gets uvloop and httptools. --asgi-disconnect-grace-period stays at its default (3 s):
        # it is when Gunicorn cancels a task that ignores http.disconnect, which no bench app does.
        # No control socket: a fixed path under ~/.gunicorn shared by every instance.
        return [_bin("gunicorn"), "-k", "asgi", "--workers", "1", "--bind", f"{host}:{port}", "--asgi-loop", "uvloop",
                "--http-parser", "fast", "--log-level", "warning", "--no-control-socket", app]
    if server in ("limit", "ws-limit"):
        script = "limit_server.py" if server == "limit" else "ws_ceiling.py"
        return [python(), str(BENCH / script), str(port)]
    raise ValueError(f"unknown server {server!r}")


def python() -> str:
    """The interpreter of this run (the bench virtualenv's, when run from it)."""
    return sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    def __init__(self, server: str, app: str, env: dict | None = None) -> None:
        self.server = server
        self.port = free_port()
        env = {**os.environ, **(env or {})}
        if server.startswith("tether@"):
            # tether@DIR: the Tether of the source tree DIR/src (``git worktree add DIR <commit>``)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(server[7:]) / "src"), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            command(server, app, self.port), cwd=ROOT, env=env,
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
    """Versions of the servers and their parsers in this interpreter's environment."""
    from importlib import metadata

    wanted = ("tether", "uvicorn", "granian", "hypercorn", "gunicorn", "gunicorn_h1c", "uvloop", "httptools", "h2",
              "websockets")
    found = {}
    for name in wanted:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def machine() -> dict:
    import platform

    from bench.report import interpreter

    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "interpreter": interpreter(), "executable": sys.executable, "machine": platform.machine(),
            "versions": versions()}
