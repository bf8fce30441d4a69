"""The exporting side of --metrics: the sum over every worker, those alive and those gone.

A live worker's counts are read from its slot (the shared memory it publishes into, once a
second and when it stops). When a worker has exited, for whatever reason (a crash, SIGKILL,
--limit-max-requests, a reload, a recycle), ``fold`` adds the counters it published to ``base``
and drops the slot, under the same lock that ``snapshot`` takes: a scrape sees the worker
either in its slot or in the base, never twice and never not at all, so no total ever goes down. Gauges (in flight, connections) are
summed over live workers only.

The float counters (seconds) are summed exactly, as fractions, and rounded once: a float sum
depends on the order of its terms, and a total that came out one ulp lower after a fold would
read as a counter reset to Prometheus.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any, NamedTuple

from .recorder import COUNTERS, EXIT_REASON, EXIT_REASONS, FLOATS, INTS, views

RESTART_REASONS = ("crashed", "max_requests", "reload", "recycle", "exited")


class Snapshot(NamedTuple):
    ints: list[int]  # recorder's integer indexes, summed over all workers (gauges: live ones)
    floats: list[float]  # recorder's float indexes, summed over all workers
    workers: int  # live workers
    restarts: dict[str, int]


class Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_ints = [0] * COUNTERS
        self.base_floats = [Fraction(0)] * FLOATS
        self.slots: dict[Any, tuple[Any, memoryview, memoryview]] = {}
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)

    def add(self, key: Any, memory: Any) -> None:
        """Export the worker ``key`` whose values live in ``memory`` (an mmap or a bytearray)."""
        ints, floats = views(memory)
        with self.lock:
            self.slots[key] = (memory, ints, floats)

    def fold(self, key: Any) -> str:
        """The worker ``key`` has exited: keep its counters, forget its gauges. Returns the
        reason it gave for leaving on its own (recorder.EXIT_REASONS), or ""."""
        with self.lock:
            entry = self.slots.pop(key, None)
            if entry is None:
                return ""
            memory, ints, floats = entry
            for i, value in enumerate(ints[:COUNTERS].tolist()):
                self.base_ints[i] += value
            for i, value in enumerate(floats.tolist()):
                self.base_floats[i] += Fraction(value)
            reason = ints[EXIT_REASON]
        ints.release()
        floats.release()
        if hasattr(memory, "close"):
            memory.close()
        return EXIT_REASONS[reason] if 0 <= reason < len(EXIT_REASONS) else ""

    def restarted(self, reason: str) -> None:
        with self.lock:
            self.restarts[reason] += 1

    def snapshot(self) -> Snapshot:
        with self.lock:
            ints = self.base_ints + [0] * (INTS - COUNTERS)
            exact = list(self.base_floats)
            for _, slot_ints, slot_floats in self.slots.values():
                for i, value in enumerate(slot_ints.tolist()):
                    ints[i] += value
                for i, value in enumerate(slot_floats.tolist()):
                    exact[i] += Fraction(value)
            return Snapshot(ints, [float(value) for value in exact], len(self.slots), dict(self.restarts))
