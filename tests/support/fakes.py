"""Fakes of what surrounds a request cycle, for the cycle tests without sockets (the wires the
cycle talks to are faked in each test file: they record what the cycle asked of them)."""

from __future__ import annotations

import asyncio
from typing import Callable


class FakeWorker:
    """contract.Worker: what the cycle needs of the server."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: bool = False, grace: float = 0.0) -> None:
        self.app: Callable = None  # type: ignore[assignment]
        self.loop = loop
        self.tasks: set = set()
        self.in_flight = 0
        self.limit_concurrency: int | None = None
        self.cancel_on_disconnect = cancel
        self.disconnect_grace = grace
        self.timeout_request: float | None = None
        self.tracks_work = cancel
        self.access_log_format = "{request_line} {status} {bytes}{note}"
        self.counted = 0

    def request_counted(self) -> None:
        self.counted += 1
