"""The supervisor: pre-forks workers on shared sockets, replaces dead ones, restarts on change.

Used for ``--workers N`` (N > 1) and ``--reload``. The supervisor never imports the app, so
each forked worker imports it fresh: that is what makes ``--reload`` pick up new code, and it
keeps one worker's import-time state (connections, threads) out of the others.

Signals: SIGINT/SIGTERM stop the workers gracefully (each finishes its in-flight requests
within --timeout-graceful-shutdown) and then the supervisor; SIGHUP replaces the workers one
at a time, starting each new worker before stopping the old one, so the socket always has a
worker accepting on it.
"""

from __future__ import annotations

import fnmatch
import os
import select
import signal
import socket
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..logs import error_logger
from .worker import STARTUP_FAILED, run_worker

READY_TIMEOUT = 60.0
CRASH_LOOP_SECONDS = 1.0


class WorkerProcess:
    __slots__ = ("pid", "ready_fd", "ready", "started_at", "error")

    def __init__(self, pid: int, ready_fd: int) -> None:
        self.pid = pid
        self.ready_fd = ready_fd
        self.ready = False
        self.started_at = time.monotonic()
        self.error: str | None = None  # the worker's startup ConfigError, sent over the pipe

    def poll_ready(self) -> bool:
        if not self.ready and self.error is None:
            try:
                data = os.read(self.ready_fd, 4096)
            except BlockingIOError:
                data = b""
            if data.startswith(b"!"):
                self.error = data[1:].decode("utf-8", "replace")
            elif data:
                self.ready = True
        return self.ready


class Supervisor:
    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.workers: dict[int, WorkerProcess] = {}
        self.pending_signals: list[int] = []
        self.stopping = False
        self.exit_code = 0
        self.ever_ready = False
        self.retry_at = 0.0
        self.failure: str | None = None

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        error_logger.info("Supervisor (pid %d) starting %d worker(s)", os.getpid(), self.config.workers)
        try:
            if self.config.reload:  # said before any worker runs, so it always precedes their lines
                error_logger.info("Watching for changes in %s", ", ".join(self._reload_dirs()))
            for _ in range(self.config.workers):
                self._spawn()
            if self.config.reload:
                self._run_reload(wake_r)
            else:
                while not self.stopping:
                    select.select([wake_r], [], [], 0.5)
                    self._drain(wake_r)
                    self._step()
        finally:
            self._stop_all()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
        if self.failure is not None:
            raise ConfigError(self.failure)  # printed once, as "tether: error: ..."
        return self.exit_code

    def _reload_dirs(self) -> list[str]:
        return [os.path.abspath(d) for d in (self.config.reload_dirs or [self.config.app_dir or "."])]

    def _run_reload(self, wake_r: int) -> None:
        import threading

        import watchfiles

        stop = threading.Event()
        dirs = self._reload_dirs()
        for changes in watchfiles.watch(
            *dirs, watch_filter=ReloadFilter(self.config), stop_event=stop, yield_on_timeout=True, rust_timeout=200,
            debounce=200, raise_interrupt=False,
        ):
            self._drain(wake_r)
            self._step()
            if self.stopping:
                stop.set()
                break
            if changes:
                names = sorted({os.path.relpath(path) for _, path in changes})
                error_logger.warning("Detected changes in %s: reloading", ", ".join(names[:5]))
                self._stop_all()
                for _ in range(self.config.workers):
                    self._spawn()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pending_signals.append(signum)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _step(self) -> None:
        signals, self.pending_signals = self.pending_signals, []
        for signum in signals:
            if signum in (signal.SIGINT, signal.SIGTERM):
                error_logger.info("Received %s: stopping workers", signal.Signals(signum).name)
                self.stopping = True
            elif signum == signal.SIGHUP and not self.stopping:
                self._rolling_restart()
        self._reap()
        for worker in self.workers.values():
            if worker.poll_ready():
                self.ever_ready = True
        if not self.stopping and len(self.workers) < self.config.workers and time.monotonic() >= self.retry_at:
            for _ in range(self.config.workers - len(self.workers)):
                self._spawn()

    # ------------------------------------------------------------------ workers
    def _spawn(self) -> WorkerProcess:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(ready_r)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                code = run_worker(
                    self.config, self.sockets, ready=lambda: os.write(ready_w, b"1"),
                    failed=lambda message: os.write(ready_w, b"!" + message.encode("utf-8", "replace")[:4000]),
                )
            finally:
                os._exit(code)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        worker = WorkerProcess(pid, ready_r)
        self.workers[pid] = worker
        return worker

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            worker.poll_ready()
            os.close(worker.ready_fd)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == STARTUP_FAILED and not worker.ready:
                if not self.ever_ready and not self.config.reload:
                    if worker.error is not None:
                        self.failure = worker.error
                    else:
                        error_logger.error("Worker failed to start: stopping")
                    self.exit_code = 1
                    self.stopping = True
                else:
                    if worker.error is not None:
                        error_logger.error("Worker failed to start: %s", worker.error)
                    self.retry_at = time.monotonic() + (10**9 if self.config.reload else 1.0)
                continue
            if code == 0:
                error_logger.info("Worker %d exited (recycled): starting a new one", pid)
            else:
                error_logger.warning("Worker %d died (exit status %d): starting a new one", pid, code)
                if time.monotonic() - worker.started_at < CRASH_LOOP_SECONDS:
                    # Died right after starting: back off, or a crash loop would eat a core.
                    self.retry_at = time.monotonic() + CRASH_LOOP_SECONDS

    def _rolling_restart(self) -> None:
        error_logger.info("Received SIGHUP: restarting workers one by one")
        for old in list(self.workers.values()):
            new = self._spawn()
            deadline = time.monotonic() + READY_TIMEOUT
            while not new.poll_ready() and time.monotonic() < deadline and new.pid in self.workers:
                time.sleep(0.02)
                self._reap()
            if not new.ready:
                error_logger.error("New worker %d did not start: keeping worker %d", new.pid, old.pid)
                continue
            self._terminate([old])

    def _terminate(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        grace = self.config.timeout_graceful_shutdown
        deadline = time.monotonic() + (grace if grace is not None else 3600) + 5
        pids = {worker.pid for worker in workers}
        while pids & set(self.workers) and time.monotonic() < deadline:
            time.sleep(0.02)
            stopping, self.stopping = self.stopping, True  # reaped workers are not replaced here
            self._reap()
            self.stopping = stopping
        for pid in pids & set(self.workers):
            error_logger.warning("Worker %d did not stop in time: killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            worker = self.workers.pop(pid)
            os.close(worker.ready_fd)

    def _stop_all(self) -> None:
        if self.workers:
            self._terminate(list(self.workers.values()))


class ReloadFilter:
    """--reload-include / --reload-exclude as glob patterns on file names (and paths)."""

    IGNORED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache"}

    def __init__(self, config: Config) -> None:
        self.includes = config.reload_includes or ["*.py"]
        self.excludes = config.reload_excludes or [".*", "*.py[cod]", "*.sw.*", "~*"]

    def __call__(self, change: Any, path: str) -> bool:
        parts = Path(path).parts
        if any(part in self.IGNORED_DIRS for part in parts):
            return False
        name = parts[-1]
        if any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in self.excludes):
            return False
        return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in self.includes)
