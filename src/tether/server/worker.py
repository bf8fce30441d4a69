"""One worker: an event loop serving the app on the listening sockets, until told to stop.

Used directly for a single process (``tether app:app``), inside each forked worker of the
supervisor (``--workers N``, ``--reload``), and by ``tether.serve()`` in an existing loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import threading
from typing import Any

from .. import integrations
from ..config import Config
from ..cycle.work import HAS_TASK_CONTEXT, recording_task_factory
from ..errors import ConfigError
from ..lifespan import Lifespan, LifespanFailed
from ..logs import error_logger
from ..metrics import METRICS
from ..protocols import switch
from .proxy_protocol import ProxyHeaderReader
from .sockets import bind_socket, describe
from .state import ServerState

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server:
    def __init__(self, config: Config, app: Any = None) -> None:
        self.config = config
        self.app = app
        self.should_exit = False
        self.force_exit = False
        self.started = False
        self.on_started: Any = None  # called once the sockets are served (the supervisor's readiness)
        self.state: ServerState | None = None
        self._exit_event: asyncio.Event | None = None
        self._servers: list = []
        self.sockets: list[socket.socket] = []

    # ------------------------------------------------------------------ lifecycle
    async def serve(self, sockets: list[socket.socket] | None = None, install_signals: bool = True) -> None:
        """Start, serve until asked to stop, then shut down gracefully.

        Raises ConfigError (unimportable app, bind failure) or LifespanFailed at startup.
        """
        metrics = None
        if self.config.metrics and not METRICS.supervised:  # (a supervised worker's are the supervisor's to serve)
            from ..metrics.serving import ProcessMetrics

            metrics = ProcessMetrics(self.config)
        try:
            await self._serve(sockets, install_signals)
        finally:
            if metrics is not None:
                metrics.close()
            elif METRICS.enabled:
                METRICS.flush()  # (a supervised worker's last counts, before it exits)

    async def _serve(self, sockets: list[socket.socket] | None, install_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._exit_event = asyncio.Event()
        if self.should_exit:
            self._exit_event.set()
        config = self.config
        tracks_work = config.on_disconnect == "cancel" or config.timeout_request is not None
        if tracks_work and config.cancel_queries:
            integrations.install()  # (before the app is imported: it may connect at import time)
        app = self.app if self.app is not None else config.load_app()
        state = self.state = ServerState(config, app, loop)
        if state.tracks_work and not HAS_TASK_CONTEXT:
            loop.set_task_factory(recording_task_factory(loop.get_task_factory()))
        if config.limit_max_requests is not None:
            jitter = random.randint(0, config.limit_max_requests_jitter) if config.limit_max_requests_jitter else 0
            state.max_requests = config.limit_max_requests + jitter
            state.on_max_requests = self._max_requests_reached
        if install_signals:
            self._install_signal_handlers(loop)
        self.sockets = sockets if sockets is not None else [bind_socket(config)]
        ssl_context = config.ssl_context()  # a bad certificate fails before the app starts up
        lifespan = Lifespan(app, config.lifespan, state.lifespan_state)
        await lifespan.startup()
        if config.proxy_protocol == "off":
            factory, listener_ssl = (lambda: switch.new_connection(state)), ssl_context
        else:  # the PROXY header comes before TLS: the listener is plain TCP, the reader starts TLS
            mode = config.proxy_protocol
            factory, listener_ssl = (lambda: ProxyHeaderReader(state, mode, ssl_context)), None
        for sock in self.sockets:
            server = await loop.create_server(factory, sock=sock, ssl=listener_ssl, backlog=config.backlog)
            self._servers.append(server)
            error_logger.info("Tether running on %s (pid %d, Press CTRL+C to quit)", describe(sock, config.is_ssl), os.getpid())
        self.started = True
        if self.on_started is not None:
            self.on_started()
        ticker = loop.create_task(self._tick())
        try:
            await self._exit_event.wait()
        finally:
            ticker.cancel()
            await self._shutdown(lifespan)

    def request_exit(self, force: bool = False) -> None:
        if self.should_exit and force:
            self.force_exit = True
        self.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    def _max_requests_reached(self) -> None:
        error_logger.info("Maximum request limit reached: shutting down this worker.")
        METRICS.exiting("max_requests")  # (the supervisor counts the restart by this reason)
        self.request_exit()

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED_SIGNALS:
            try:
                loop.add_signal_handler(sig, self.request_exit, True)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.request_exit, True))

    async def _tick(self) -> None:
        state = self.state
        while True:
            await asyncio.sleep(1.0)
            state.tick()  # type: ignore[union-attr]
            if METRICS.enabled:
                METRICS.tick(state)

    async def _shutdown(self, lifespan: Lifespan) -> None:
        state = self.state
        assert state is not None
        error_logger.info("Shutting down")
        state.shutting_down = True
        for server in self._servers:
            server.close()
        for conn in list(state.connections):
            conn.close_idle()
        timeout = self.config.timeout_graceful_shutdown
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (state.connections or state.tasks) and not self.force_exit:
            if deadline is not None and loop.time() >= deadline:
                error_logger.warning("Graceful shutdown timed out after %ss: cancelling what is left", timeout)
                break
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            conn.transport.abort()
        for task in list(state.tasks):
            task.cancel()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=5)
        for server in self._servers:
            await server.wait_closed()
        await lifespan.shutdown()
        state.hangups.close()
        for sock in self.sockets:
            if sock.family == socket.AF_UNIX and self.config.uds and not self.config.fd:
                try:
                    os.unlink(self.config.uds)
                except OSError:
                    pass


# ---------------------------------------------------------------------- running a loop
def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_in_new_loop(coro_factory: Any, kind: str) -> Any:
    loop = new_event_loop(kind)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro_factory())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


STARTUP_FAILED = 3  # worker exit status: the app could not be loaded or started


def run_worker(config: Config, sockets: list[socket.socket] | None, ready: Any = None, failed: Any = None) -> int:
    """Serve in this process until stopped. Returns the process exit status.

    A ConfigError at startup goes to ``failed(message)`` (a supervised worker), or is raised
    (a single process: the CLI prints it as one "tether: error:" line).
    """
    server = Server(config)

    server.on_started = ready

    async def main() -> None:
        await server.serve(sockets)

    try:
        run_in_new_loop(main, config.loop)
    except ConfigError as exc:
        if failed is None:
            raise
        failed(str(exc))
        return STARTUP_FAILED
    except LifespanFailed as exc:
        error_logger.error("Application startup failed: %s", exc)
        return STARTUP_FAILED
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()
    return 0
