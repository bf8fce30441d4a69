"""FastAPI ``def`` endpoint running a pure-Python CPU loop, which records when it ends.

    GET /cpu?id=ID&s=20         the loop, plain: nothing can interrupt pure Python in a thread
    GET /cpu-optin?id=ID&s=20   the same loop inside the CPU-loop opt-in of issue 14
    GET /ok
"""

from __future__ import annotations

import time

import tether

from fastapi import FastAPI

from . import _record

_record.capture_warnings()
app = FastAPI()


def cpu_opt_in():  # type: ignore[no-untyped-def]
    """Tether's documented one-line opt-in: the request's cancel interrupts this thread's loop."""
    return tether.interruptible()


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
