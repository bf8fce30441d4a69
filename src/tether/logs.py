"""Logging set-up and the disconnect counters.

Loggers: ``tether.error`` (server and application errors), ``tether.access`` (one line per
request). ``STATS`` counts disconnects and abandoned work in this process; ``tether.stats()``
returns a snapshot for metrics exporters.
"""

from __future__ import annotations

import logging
import sys

from .metrics import METRICS

error_logger = logging.getLogger("tether.error")
access_logger = logging.getLogger("tether.access")
PHASES = ("mid_body", "before_response", "mid_stream", "websocket")


class Stats:
    """Per-process counters. Cheap: plain integer and float attributes."""

    __slots__ = ("requests", "disconnects", "abandoned_requests", "abandoned_seconds", "cancelled_requests",
                 "deadline_timeouts")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.disconnects = dict.fromkeys(PHASES, 0)
        self.abandoned_requests = 0
        self.abandoned_seconds = 0.0
        self.cancelled_requests = 0
        self.deadline_timeouts = 0

    def disconnected(self, phase: str) -> None:
        self.disconnects[phase] += 1
        if METRICS.enabled:
            METRICS.disconnected(phase)

    def abandoned(self, seconds: float, cancelled: bool) -> None:
        self.abandoned_requests += 1
        self.abandoned_seconds += seconds
        if cancelled:
            self.cancelled_requests += 1
        if METRICS.enabled:
            METRICS.abandoned(seconds, cancelled)

    def deadline_timeout(self) -> None:
        """A request's deadline (--timeout-request) passed before it was answered or delivered."""
        self.deadline_timeouts += 1
        if METRICS.enabled:
            METRICS.deadline_timeout()

    def snapshot(self) -> dict:
        return {
            "requests": self.requests,
            "disconnects": dict(self.disconnects),
            "disconnects_total": sum(self.disconnects.values()),
            "abandoned_requests": self.abandoned_requests,
            "abandoned_seconds": self.abandoned_seconds,
            "cancelled_requests": self.cancelled_requests,
            "deadline_timeouts": self.deadline_timeouts,
        }


STATS = Stats()


def configure_default_logging(level: int) -> None:
    """Plain stderr logging for the tether loggers, unless the user configured logging."""
    logger = logging.getLogger("tether")
    if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(level)
