"""Acceptance: heavy computation stops when the client leaves (``--on-disconnect cancel``).

* A CPU-bound loop that yields (``await asyncio.sleep(0)``) every ~10 ms is cancelled at its
  next yield: it must stop within 1 s of the client leaving (target 50 ms).
* Work offloaded to a thread cannot be interrupted, but the coroutine awaiting it can: the
  awaiting coroutine gets ``CancelledError`` at once, the thread's eventual result is discarded,
  and a cooperative stop flag lets the thread end early.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, Callable

import pytest

from tests.support.disconnect import hang_up
from tests.support.http1 import send_request
from tests.support.probe import Probe
from tests.support.server import serve

pytestmark = pytest.mark.timeout(60)


def spin(seconds: float) -> int:
    """Pure-Python CPU work for about ``seconds``."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(200))
    return n


def respond(send: Any, body: bytes) -> Any:
    async def go() -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    return go()


def test_cpu_bound_loop_stops_when_the_client_leaves() -> None:
    rec = Probe()
    slices = [0]

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark("started")
        deadline = time.monotonic() + 20  # bounded even if the cancel never comes
        try:
            while time.monotonic() < deadline:
                spin(0.01)
                slices[0] += 1
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            rec.mark("cancelled", slices[0])
            raise
        rec.mark("finished")
        await respond(send, b"done")

    with serve(app, on_disconnect="cancel", lifespan="off") as srv:
        sock = send_request(srv.port, "/compute")
        try:
            rec.wait("started", 5)
            time.sleep(0.3)
        finally:
            left = hang_up(sock)
        rec.wait("cancelled", 1.0)
        ms = rec.since("cancelled", left)
        print(f"\n[compute] CPU-bound loop (10 ms slices) stopped {ms:.1f} ms after the client left "
              f"(target 50 ms; {rec.values['cancelled']} slices run)")
        assert "finished" not in rec
        assert ms < 1000


def offload(executor: concurrent.futures.Executor, fn: Callable[[threading.Event], Any]) -> Any:
    """Run ``fn(stop)`` in a thread; if the awaiting coroutine is cancelled, ask ``fn`` to stop.

    The thread cannot be interrupted: cancelling the awaiting coroutine detaches it from the
    thread's future, whose result is then discarded; ``stop`` lets cooperative code end early.
    """

    async def run() -> Any:
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(executor, fn, stop)
        try:
            return await future
        except asyncio.CancelledError:
            stop.set()
            raise

    return run()


@pytest.mark.parametrize("style", ["to_thread", "run_in_executor"])
def test_thread_offload_awaiting_coroutine_is_cancelled(style: str) -> None:
    rec = Probe()
    thread_done = threading.Event()
    results: list = []
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="acceptance-offload")

    def blocking_work(stop: threading.Event | None = None) -> str:
        rec.mark("thread.started")
        try:
            end = time.monotonic() + (2.0 if stop is None else 20.0)  # bounded either way
            while time.monotonic() < end:
                if stop is not None and stop.is_set():
                    rec.mark("thread.stopped_early")
                    return "partial"
                spin(0.01)
            return "complete"
        finally:
            thread_done.set()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark("started")
        try:
            if style == "to_thread":
                result = await asyncio.to_thread(blocking_work)
            else:
                result = await offload(executor, blocking_work)
        except asyncio.CancelledError:
            rec.mark("cancelled")
            raise
        results.append(result)  # never reached: the result of abandoned work is discarded
        await respond(send, result.encode())

    try:
        with serve(app, on_disconnect="cancel", lifespan="off") as srv:
            sock = send_request(srv.port, "/offload")
            try:
                rec.wait("thread.started", 5)
                time.sleep(0.3)
            finally:
                left = hang_up(sock)
            rec.wait("cancelled", 1.0)
            ms = rec.since("cancelled", left)
            assert thread_done.wait(5), "the offloaded work never ended"
            print(f"\n[compute/{style}] awaiting coroutine cancelled {ms:.1f} ms after the client left; thread "
                  + ("stopped early via its stop flag" if "thread.stopped_early" in rec else "ran to its end, result discarded"))
            if style == "run_in_executor":
                assert "thread.stopped_early" in rec, "the stop flag did not reach the thread"
            time.sleep(0.05)  # let the loop process the thread's completion
            assert results == [], "the abandoned result reached the app"
            assert ms < 1000
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
