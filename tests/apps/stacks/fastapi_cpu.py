"""FastAPI ``def`` endpoint running a pure-Python CPU loop, which records when it ends.

    GET /cpu?id=ID&s=20         the loop, plain: nothing can interrupt pure Python in a thread
    GET /cpu-optin?id=ID&s=20   the same loop inside the CPU-loop opt-in of issue 14
    GET /ok
"""

from __future__ import annotations

import contextlib
import time

from fastapi import FastAPI

from . import _record

_record.capture_warnings()
app = FastAPI()


# ==========================================================================================
# ISSUE 14 CPU-LOOP OPT-IN GOES HERE.
# The issue asks Tether for a documented one-line opt-in (a decorator or context manager)
# under which a pure-Python loop in a request's thread is interrupted when the request is
# cancelled. Until Tether has it, this placeholder does nothing, and the CPU-loop test under
# --on-disconnect cancel in tests/test_abandoned_stacks.py is a strict xfail. Replace the body
# with the real opt-in (e.g. ``return tether.contrib.interruptible()``): it is the only
# Tether-specific line of these apps.
# ==========================================================================================
def cpu_opt_in():  # type: ignore[no-untyped-def]
    return contextlib.nullcontext()


def spin(rid: str, duration: float) -> int:
    """Pure Python for ``duration`` seconds; records ``end`` however it stops."""
    _record.record("start", rid)
    started = time.monotonic()
    deadline = started + duration
    how = "interrupted"
    count = 0
    try:
        while time.monotonic() < deadline:
            for _ in range(1000):
                count += 1
        how = "completed"
        return count
    finally:
        _record.record("end", rid, f"{how} after {time.monotonic() - started:.3f}s")


@app.get("/cpu")
def cpu(id: str = "-", s: float = 20.0) -> dict:
    return {"count": spin(_record.request_id(id), _record.seconds(s))}


@app.get("/cpu-optin")
def cpu_optin(id: str = "-", s: float = 20.0) -> dict:
    with cpu_opt_in():
        return {"count": spin(_record.request_id(id), _record.seconds(s))}


@app.get("/ok")
def ok() -> dict:
    return {"ok": True}
