"""Tether as a subprocess of its own process group (``running``, ``Tether``), run to completion
(``run_cli``), and what the edge and process tests check of it (one error line, live pids).

A subprocess writes its output to a file, never to a pipe nobody reads (a busy access log would
fill a pipe and block the server). Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from tests.support.http1 import answers
from tests.support.server import ROOT
from tests.support.waiting import free_port, wait_until

APPS = ROOT / "tests" / "apps"
PYTHON_M_TETHER = [sys.executable, "-m", "tether"]


def tether_env(extra: dict | None = None) -> dict:
    """The environment for a Tether subprocess: tests/apps importable, no stray TETHER_* vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(APPS), env.get("PYTHONPATH", "")] if p)
    env.update(extra or {})
    return env


def console_script() -> list[str]:
    """The installed `tether` console script (next to this Python)."""
    path = Path(sys.executable).parent / "tether"
    if not path.exists():
        import shutil

        found = shutil.which("tether")
        assert found, "the tether console script is not installed"
        path = Path(found)
    return [str(path)]


def run_cli(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 20,
            command: Sequence[str] | None = None) -> subprocess.CompletedProcess:
    """Run tether to completion (for --help, --version and errors)."""
    return subprocess.run(
        [*(command or PYTHON_M_TETHER), *args], capture_output=True, text=True, env=tether_env(env),
        cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def run_api(options: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """``tether.run(app, <options>)`` with an app object (not an import string), in a child
    Python on a free port: what a script calling the API gets."""
    code = ("import tether\n"
            "async def app(scope, receive, send): pass\n"
            f"tether.run(app, {options}, port={free_port()})\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=tether_env())


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit; stderr is exactly one line, "tether: error: ...", with no traceback."""
    assert result.returncode != 0, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("tether: error: "), line
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


class Tether:
    """A running Tether subprocess (its own process group), output captured to a file."""

    def __init__(self, args: Sequence[str], env: dict | None = None, cwd: str | Path | None = None,
                 pass_fds: Sequence[int] = (), command: Sequence[str] | None = None,
                 port: int | None = None, url: str | None = None) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix="tether-edge-", suffix=".log")
        self.port = port
        self.url = url or (f"http://127.0.0.1:{port}" if port else "")
        self.args = list(args)
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                [*(command or PYTHON_M_TETHER), *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=tether_env(env), cwd=cwd, pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        self.pid = self.proc.pid

    # ------------------------------------------------------------------ output
    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def wait_for(self, text: str, count: int = 1, timeout: float = 15.0, allow_exit: bool = False) -> str:
        """Wait until ``text`` appears ``count`` times in the output; returns the output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if out.count(text) >= count:
                return out
            if self.proc.poll() is not None and not allow_exit:
                out = self.output()
                if out.count(text) >= count:
                    return out
                raise AssertionError(f"tether exited ({self.proc.returncode}) before {text!r} x{count}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} not seen within {timeout}s:\n{out}")
            time.sleep(0.05)

    def wait_ready(self, workers: int = 1, timeout: float = 20.0) -> str:
        return self.wait_for("Tether running on", count=workers, timeout=timeout)

    def wait_serving(self, port: int | None = None, timeout: float = 15.0) -> None:
        """A GET / on ``port`` (default: its own) is answered 200; the failure shows the output."""
        port = port or self.port
        assert port, "which port?"
        wait_until(lambda: answers(port), timeout, lambda: f"tether answering 200 on {port}:\n{self.output()}",
                   interval=0.05)

    def worker_pids(self) -> list[int]:
        """Pids from the "Tether running on ... (pid N," lines, in order of appearance."""
        return [int(pid) for pid in re.findall(r"Tether running on \S+ \(pid (\d+)", self.output())]

    def children(self) -> set[int]:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as fh:
                return {int(pid) for pid in fh.read().split()}
        except OSError:
            return set()

    # ------------------------------------------------------------------ process
    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        return self.proc.returncode

    def kill_group(self) -> None:
        """SIGKILL whatever is left of this process group (workers of a killed supervisor)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


@contextlib.contextmanager
def running(*args: str, port: int | bool = True, ready: int = 1, env: dict | None = None,
            cwd: str | Path | None = None, pass_fds: Sequence[int] = (), command: Sequence[str] | None = None,
            timeout: float = 20.0, scheme: str = "http") -> Iterator[Tether]:
    """Start tether ARGS (+ --port P unless port=False); wait for ``ready`` "Tether running" lines."""
    args = list(args)
    chosen: int | None = None
    if port is True:
        chosen = free_port()
        args += ["--port", str(chosen)]
    elif isinstance(port, int) and port:
        chosen = port
    url = f"{scheme}://127.0.0.1:{chosen}" if chosen else None
    server = Tether(args, env=env, cwd=cwd, pass_fds=pass_fds, command=command, port=chosen, url=url)
    try:
        if ready:
            server.wait_ready(ready, timeout=timeout)
        yield server
    finally:
        server.cleanup()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); look at its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
