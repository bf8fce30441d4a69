"""Tether's log records as a test sees them (through pytest's caplog)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import pytest


@contextlib.contextmanager
def tether_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog sees tether.error (DEBUG and up) and tether.access, whatever logging set-up ran
    before (Tether's default logging stops propagation at the "tether" logger)."""
    logger = logging.getLogger("tether")
    propagate = logger.propagate
    logger.propagate = True
    caplog.set_level(logging.INFO, logger="tether.access")
    caplog.set_level(logging.DEBUG, logger="tether.error")
    caplog.handler.setLevel(logging.DEBUG)  # set_level also sets the handler level: keep the lower one
    try:
        yield caplog
    finally:
        logger.propagate = propagate


def error_records(caplog: pytest.LogCaptureFixture) -> list:
    """Records of the tether loggers at ERROR and above."""
    return [r for r in caplog.records if r.name.startswith("tether") and r.levelno >= logging.ERROR]


def warning_records(caplog: pytest.LogCaptureFixture) -> list:
    """Records of tether.error at WARNING and above."""
    return [r for r in caplog.records if r.name == "tether.error" and r.levelno >= logging.WARNING]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of tether.access, in order."""
    return [r.getMessage() for r in caplog.records if r.name == "tether.access"]


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The messages of one logger ("tether.access", "tether.error"), in order."""
    return [r.getMessage() for r in caplog.records if r.name == logger]
