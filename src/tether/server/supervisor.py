"""The supervisor: pre-forks workers on shared sockets, replaces dead ones, restarts on change.

Used for ``--workers N`` (N > 1), ``--reload``, ``--workers-lifetime`` and ``--workers-max-rss``. The supervisor never imports the app, so
each forked worker imports it fresh: that is what makes ``--reload`` pick up new code, and it
keeps one worker's import-time state (connections, threads) out of the others.

Signals: SIGINT/SIGTERM stop the workers gracefully (each finishes its in-flight requests
within --timeout-graceful-shutdown) and then the supervisor; SIGHUP replaces the workers one
at a time, starting each new worker before stopping the old one, so the socket always has a
worker accepting on it.

Replacing a worker is one mechanism for every reason (SIGHUP, --workers-lifetime,
--workers-max-rss): a queue of workers to replace, worked through one at a time without
blocking the main loop (it keeps reaping, answering signals and killing overdue workers):
start the new worker, wait until it serves, SIGTERM the old one, wait until it has exited,
then the next.
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
from .recycling import RSS_CHECK_INTERVAL, rss_mib, spread_deadline
from .worker import STARTUP_FAILED, run_worker

READY_TIMEOUT = 60.0
CRASH_LOOP_SECONDS = 1.0
SUPERVISOR_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
RECYCLE_RETRY_SECONDS = 10.0  # after a replacement that failed to start, before recycling again


class WorkerProcess:
    __slots__ = ("pid", "ready_fd", "ready", "started_at", "error", "recycle_at", "stop_deadline", "rss_exempt")

    def __init__(self, pid: int, ready_fd: int) -> None:
        self.pid = pid
        self.ready_fd = ready_fd
        self.ready = False
        self.started_at = time.monotonic()
        self.error: str | None = None  # the worker's startup ConfigError, sent over the pipe
        self.recycle_at: float | None = None  # --workers-lifetime deadline (monotonic)
        self.stop_deadline: float | None = None  # set once told to stop: retiring, killed after this
        self.rss_exempt = False  # already over --workers-max-rss when it started: not recycled for it

    @property
    def retiring(self) -> bool:
        return self.stop_deadline is not None

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
        # Replacements (SIGHUP, recycling): the queue, and the one in progress.
        self.replace_queue: list[tuple[int, str]] = []  # (pid, reason)
        self.replacing: tuple[WorkerProcess, WorkerProcess, float] | None = None  # (old, new, ready by)
        self.replace_retry_at = 0.0
        self.next_rss_check = 0.0
        self.replacing_reason = ""  # the queue's reason for the replacement in progress
        self.metrics: Any = None  # metrics.serving.SupervisorMetrics with --metrics

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self._describe_recycling()
        if self.config.metrics:  # (before any fork: a bad --metrics-port stops here, as one error line)
            from ..metrics.serving import SupervisorMetrics

            self.metrics = SupervisorMetrics(self.config)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in SUPERVISOR_SIGNALS:
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
                    select.select([wake_r, *self._pending_ready_fds()], [], [], self._wait_time())
                    self._drain(wake_r)
                    self._step()
        finally:
            self._stop_all()
            if self.metrics is not None:
                self.metrics.close()
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
                self.replace_queue, self.replacing = [], None  # every worker is replaced anyway
                self._restarted("reload", len(self._serving()))
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
            if not worker.ready and worker.poll_ready():
                self.ever_ready = True
                self._check_start_rss(worker)
        now = time.monotonic()
        self._kill_overdue(now)
        if self.stopping:
            return
        self._queue_recycling(now)
        self._advance_replacement(now)
        missing = self.config.workers - len(self._serving())
        if missing > 0 and time.monotonic() >= self.retry_at:
            for _ in range(missing):
                self._spawn()

    def _serving(self) -> list[WorkerProcess]:
        """The workers that fill a slot: all but those told to stop (the old one of a replacement
        counts until the new one serves, and the new one from its start, so nothing is spawned
        for a slot that is being replaced)."""
        return [worker for worker in self.workers.values() if not worker.retiring]

    def _pending_ready_fds(self) -> list[int]:
        return [w.ready_fd for w in self.workers.values() if not w.ready and w.error is None and not w.retiring]

    def _wait_time(self) -> float:
        """How long the main loop may sleep: until the next lifetime deadline, RSS check or kill."""
        now = time.monotonic()
        times = [w.recycle_at for w in self._recycle_candidates() if w.recycle_at is not None]
        times += [w.stop_deadline for w in self.workers.values() if w.stop_deadline is not None]
        if self.config.workers_max_rss is not None:
            times.append(self.next_rss_check)
        if self.replacing is not None:
            times.append(self.replacing[2])
        return min([0.5] + [max(t - now, 0.01) for t in times])

    # ------------------------------------------------------------------ workers
    def _spawn(self, replacing: WorkerProcess | None = None) -> WorkerProcess:
        ready_r, ready_w = os.pipe()
        slot = self.metrics.new_slot() if self.metrics is not None else None
        # Until the child has reset them, a signal would run the supervisor's handler in the child
        # (and a SIGTERM sent to it then would be lost): block them across the fork.
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(ready_r)
                signal.set_wakeup_fd(-1)
                for sig in SUPERVISOR_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
                if slot is not None:
                    self.metrics.in_worker(slot)
                code = run_worker(
                    self.config, self.sockets, ready=lambda: os.write(ready_w, b"1"),
                    failed=lambda message: os.write(ready_w, b"!" + message.encode("utf-8", "replace")[:4000]),
                )
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        worker = WorkerProcess(pid, ready_r)
        lifetime = self.config.workers_lifetime
        if lifetime is not None:
            others = [w.recycle_at for w in self._recycle_candidates(ready_only=False)
                      if w.recycle_at is not None and w is not replacing]
            worker.recycle_at = spread_deadline(worker.started_at, lifetime, self.config.workers, others)
        self.workers[pid] = worker
        if slot is not None:
            self.metrics.started(pid, slot)
        return worker

    def _restarted(self, reason: str, count: int = 1) -> None:
        """Count ``count`` workers replaced for ``reason`` (metrics.totals.RESTART_REASONS)."""
        if self.metrics is not None:
            for _ in range(count):
                self.metrics.restarted(reason)

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
            exit_reason = self.metrics.ended(pid) if self.metrics is not None else ""  # (its counts are kept)
            if self.stopping or worker.retiring:  # told to stop: its slot is already filled
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
                    self._restarted("crashed")
                continue
            if code == 0:
                error_logger.info("Worker %d exited (recycled): starting a new one", pid)
                self._restarted("max_requests" if exit_reason == "max_requests" else "exited")
            else:
                error_logger.warning("Worker %d died (exit status %d): starting a new one", pid, code)
                self._restarted("crashed")
                if time.monotonic() - worker.started_at < CRASH_LOOP_SECONDS:
                    # Died right after starting: back off, or a crash loop would eat a core.
                    self.retry_at = time.monotonic() + CRASH_LOOP_SECONDS

    def _rolling_restart(self) -> None:
        error_logger.info("Received SIGHUP: restarting workers one by one")
        for worker in self._serving():
            self._queue_replacement(worker, "SIGHUP")

    # ------------------------------------------------------------------ replacing workers
    def _queue_replacement(self, worker: WorkerProcess, reason: str) -> bool:
        if any(pid == worker.pid for pid, _ in self.replace_queue):
            return False
        if self.replacing is not None and self.replacing[0] is worker:
            return False
        self.replace_queue.append((worker.pid, reason))
        return True

    def _advance_replacement(self, now: float) -> None:
        """One step of the replacement in progress, or start the next one from the queue."""
        if self.replacing is not None:
            old, new, ready_by = self.replacing
            if old.retiring:  # waiting for the old worker to exit before the next replacement
                if old.pid in self.workers:
                    return
                self.replacing = None
            elif new.ready:  # the new worker serves: now the old one may stop
                if old.pid in self.workers:
                    self._retire(old, now)
                    self._restarted("reload" if self.replacing_reason == "SIGHUP" else "recycle")
                    return
                self.replacing = None  # (the old one died meanwhile)
            elif new.pid not in self.workers or now >= ready_by:  # (one that failed exits by itself)
                error_logger.error("New worker %d did not start: keeping worker %d", new.pid, old.pid)
                if new.pid in self.workers:
                    self._retire(new, now, signal.SIGKILL)
                self.replacing = None
                self.replace_retry_at = now + RECYCLE_RETRY_SECONDS
                if old.recycle_at is not None and old.recycle_at <= now:
                    old.recycle_at = now + RECYCLE_RETRY_SECONDS
                return
            else:
                return
        while self.replace_queue:
            pid, reason = self.replace_queue.pop(0)
            old = self.workers.get(pid)
            if old is not None and not old.retiring:
                self.replacing = (old, self._spawn(replacing=old), now + READY_TIMEOUT)
                self.replacing_reason = reason
                return

    def _retire(self, worker: WorkerProcess, now: float, sig: int = signal.SIGTERM) -> None:
        """Tell a worker to stop; it is killed if it has not exited by its graceful deadline."""
        grace = self.config.timeout_graceful_shutdown
        worker.stop_deadline = now + (grace if grace is not None else 3600) + 5
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _kill_overdue(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.stop_deadline is not None and now >= worker.stop_deadline:
                error_logger.warning("Worker %d did not stop in time: killing it", worker.pid)
                worker.stop_deadline = float("inf")  # killed once; reaped by the next _reap
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------------ recycling
    def _describe_recycling(self) -> None:
        """Say what recycling will do, or refuse what cannot work (before any worker starts)."""
        config = self.config
        if config.workers_lifetime is not None:
            error_logger.info(
                "Recycling each worker after at most %g s (deadlines spread %g s apart)",
                config.workers_lifetime, config.workers_lifetime / config.workers)
        if config.workers_max_rss is not None:
            if rss_mib(os.getpid()) is None:
                raise ConfigError("--workers-max-rss needs /proc/<pid>/statm (Linux)")
            error_logger.info("Recycling a worker over %d MiB of RSS (checked every %g s)",
                              config.workers_max_rss, RSS_CHECK_INTERVAL)

    def _recycle_candidates(self, ready_only: bool = True) -> list[WorkerProcess]:
        """Serving workers that are not already queued or being replaced."""
        queued = {pid for pid, _ in self.replace_queue}
        if self.replacing is not None:
            queued.add(self.replacing[0].pid)
        return [w for w in self._serving() if w.pid not in queued and (w.ready or not ready_only)]

    def _queue_recycling(self, now: float) -> None:
        config = self.config
        if now < self.replace_retry_at:
            return
        if config.workers_lifetime is not None:
            for worker in self._recycle_candidates():
                if worker.recycle_at is not None and now >= worker.recycle_at:
                    error_logger.info("Recycling worker %d: it reached --workers-lifetime (%g s, up %.1f s)",
                                      worker.pid, config.workers_lifetime, now - worker.started_at)
                    self._queue_replacement(worker, "lifetime")
        if config.workers_max_rss is not None and now >= self.next_rss_check:
            self.next_rss_check = now + RSS_CHECK_INTERVAL
            for worker in self._recycle_candidates():
                rss = rss_mib(worker.pid)
                if rss is not None and rss > config.workers_max_rss and not worker.rss_exempt:
                    error_logger.info("Recycling worker %d: its RSS is %.0f MiB, over --workers-max-rss %d MiB",
                                      worker.pid, rss, config.workers_max_rss)
                    self._queue_replacement(worker, "max-rss")

    def _check_start_rss(self, worker: WorkerProcess) -> None:
        """A worker already over the limit when it starts would be replaced in a loop: say so once."""
        limit = self.config.workers_max_rss
        rss = rss_mib(worker.pid) if limit is not None else None
        if rss is not None and rss > limit:  # type: ignore[operator]
            worker.rss_exempt = True
            error_logger.warning(
                "Worker %d already uses %.0f MiB when it starts, over --workers-max-rss %d MiB: it is not "
                "recycled for memory (its replacement would start as big)", worker.pid, rss, limit)

    def _terminate(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if worker.retiring:  # already told (a second SIGTERM would cut its in-flight requests)
                continue
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
            if self.metrics is not None:
                self.metrics.ended(pid)

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
