"""What the stack apps share: the events file, PostgreSQL settings and the query they run.

An event is one line ``<time.monotonic()> <pid> <name> <request id> <detail>``. CLOCK_MONOTONIC
is one clock for every process on the machine, so the harness compares it with its own times.
Lines are appended with one write() each (O_APPEND), so threads and processes do not interleave.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings

_lock = threading.Lock()
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def record(name: str, rid: str = "-", detail: str = "") -> None:
    path = os.environ.get("STACKS_EVENTS")
    if not path:
        return
    detail = " ".join(str(detail).split())
    line = f"{time.monotonic():.6f} {os.getpid()} {name} {rid} {detail}".rstrip() + "\n"
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def request_id(value: object) -> str:
    """The request's id from its query string (it goes into SQL comments: checked)."""
    text = str(value or "-")
    if not _ID.match(text):
        raise ValueError(f"bad request id {text!r}")
    return text


def seconds(value: object, default: float = 20.0) -> float:
    number = float(value) if value not in (None, "") else default
    if not 0 <= number <= 600:
        raise ValueError(f"bad duration {number!r}")
    return number


def sleep_sql(rid: str, duration: float) -> str:
    """The long query; its comment names the request, as pg_stat_activity shows it."""
    return f"SELECT pg_sleep({float(duration)!r}) /* stacks:{request_id(rid)} */"


def pg_host() -> str:
    return os.environ.get("STACKS_PG_HOST", "127.0.0.1")


def pg_port() -> int:
    return int(os.environ.get("STACKS_PG_PORT", "5432"))


def conninfo(app_name: str) -> str:
    """libpq connection string (psycopg 3, psycopg2)."""
    return f"host={pg_host()} port={pg_port()} user=postgres dbname=postgres application_name={app_name}"


def dsn() -> str:
    """URI for asyncpg."""
    return f"postgresql://postgres@{pg_host()}:{pg_port()}/postgres"


def sqlalchemy_url(driver: str) -> str:
    return f"postgresql+{driver}://postgres@{pg_host()}:{pg_port()}/postgres"


class _EventHandler(logging.Handler):
    def emit(self, record_: logging.LogRecord) -> None:
        try:
            text = record_.getMessage()
            if record_.exc_info and record_.exc_info[1] is not None:
                text += f" [{type(record_.exc_info[1]).__name__}]"
            record(f"log-{record_.levelname.lower()}", "-", f"{record_.name}: {text}")
        except Exception:  # a log handler must never raise into the app
            pass


def capture_warnings(*loggers: str) -> None:
    """Record every warning (SQLAlchemy's "non-checked-in connection" is one) and the WARNING+
    lines of ``loggers`` in the events file, and still show them as usual."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        record("warning", "-", f"{category.__name__}: {message}")
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always")
    handler = _EventHandler(logging.WARNING)
    # "asyncio": a task that failed unseen ("Task exception was never retrieved") is logged there.
    for name in (*loggers, "asyncio"):
        logger = logging.getLogger(name)
        if not logger.hasHandlers():  # keep what logging's last resort would have shown on stderr
            stderr = logging.StreamHandler()
            stderr.setLevel(logging.WARNING)
            stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(stderr)
        logger.addHandler(handler)
