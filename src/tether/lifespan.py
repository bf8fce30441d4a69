"""The ASGI lifespan protocol: startup and shutdown events, and the state they share."""

from __future__ import annotations

import asyncio
from typing import Callable

from .logs import error_logger


class LifespanFailed(Exception):
    """Startup failed; the message is the app's own (or the exception's)."""


class Lifespan:
    def __init__(self, app: Callable, mode: str, state: dict) -> None:
        self.app = app
        self.mode = mode  # "auto" | "on" | "off"
        self.state = state
        self.events: asyncio.Queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.failure: str | None = None
        self.unsupported = False
        self.task: asyncio.Task | None = None

    async def startup(self) -> None:
        if self.mode == "off":
            return
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.events.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.failure is not None:
            raise LifespanFailed(self.failure)

    async def shutdown(self) -> None:
        if self.mode == "off" or self.unsupported or self.task is None or self.task.done():
            return
        await self.events.put({"type": "lifespan.shutdown"})
        await self.shutdown_done.wait()
        if self.failure is not None:
            error_logger.error("Application shutdown failed: %s", self.failure)

    async def _run(self, scope: dict) -> None:
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if not self.startup_done.is_set() and self.mode == "auto":
                self.unsupported = True
                error_logger.info("ASGI 'lifespan' protocol appears unsupported (%s: %s).", type(exc).__name__, exc)
            elif not self.startup_done.is_set():
                self.failure = f"{type(exc).__name__}: {exc}"
                error_logger.error("Exception in 'lifespan' protocol", exc_info=exc)
            elif not self.shutdown_done.is_set():
                error_logger.error("Exception in 'lifespan' protocol during shutdown", exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def receive(self) -> dict:
        return await self.events.get()

    async def send(self, message: dict) -> None:
        mtype = message["type"]
        if mtype == "lifespan.startup.complete":
            self.startup_done.set()
        elif mtype == "lifespan.startup.failed":
            self.failure = message.get("message") or "lifespan.startup.failed"
            self.startup_done.set()
        elif mtype == "lifespan.shutdown.complete":
            self.shutdown_done.set()
        elif mtype == "lifespan.shutdown.failed":
            self.failure = message.get("message") or "lifespan.shutdown.failed"
            self.shutdown_done.set()
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {mtype!r}")
