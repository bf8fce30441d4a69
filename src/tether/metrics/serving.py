"""Who serves /metrics: the supervisor for its workers, or a single process for itself."""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..errors import ConfigError
from .recorder import METRICS, SLOT_BYTES, new_slot
from .totals import Totals


def _exporter(totals: Totals, config: Config) -> Any:
    try:
        from .exporter import Exporter
    except ImportError:
        raise ConfigError("--metrics needs the prometheus_client package (pip install prometheus_client)") from None
    return Exporter(totals, config.metrics_address, config.metrics_port)


class SupervisorMetrics:
    """A slot per worker (made before the fork), folded into the totals when the worker exits."""

    def __init__(self, config: Config) -> None:
        self.totals = Totals()
        self.exporter = _exporter(self.totals, config)

    def new_slot(self) -> Any:
        return new_slot()

    def in_worker(self, slot: Any) -> None:
        """In the forked worker: count into ``slot``; the listener is the supervisor's."""
        self.exporter.close_after_fork()
        METRICS.attach(slot, supervised=True)

    def started(self, pid: int, slot: Any) -> None:
        self.totals.add(pid, slot)

    def ended(self, pid: int) -> str:
        """Worker ``pid`` is gone: keep its counts. Returns the reason it gave for exiting."""
        return self.totals.fold(pid)

    def restarted(self, reason: str) -> None:
        self.totals.restarted(reason)

    def close(self) -> None:
        self.exporter.close()


class ProcessMetrics:
    """A single process (or ``tether.serve()``) counting and serving for itself."""

    def __init__(self, config: Config) -> None:
        memory = bytearray(SLOT_BYTES)
        self.totals = Totals()
        self.totals.add(os.getpid(), memory)
        self.exporter = _exporter(self.totals, config)
        METRICS.attach(memory, supervised=False)

    def close(self) -> None:
        METRICS.detach()
        self.exporter.close()
