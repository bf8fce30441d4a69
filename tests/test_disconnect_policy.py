"""The disconnect policy (--on-disconnect notify|cancel, --disconnect-grace, shield()), the
``tether.disconnect`` scope extension (also behind Starlette's BaseHTTPMiddleware), and what a
disconnect leaves behind for operators: tether.stats() counters and the access log's 499 line.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tether
from tests.support.asgi import START, read_body, signal_of
from tests.support.disconnect import WITHIN, assert_prompt, close_kinds, hang_up
from tests.support.http1 import recv_until, request
from tests.support.logs import error_records
from tests.support.probe import Probe
from tests.support.server import serve, server_idle
from tether.contrib import disconnect_event


def _sleeper(probe: Probe, seconds: float, cleanup: float = 0.0) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            if cleanup:
                await asyncio.sleep(cleanup)  # abandoned work the app still does after the cancel
            raise
        probe.mark("finished", signal_of(scope).is_set())

    return app


# ---------------------------------------------------------------------- 4. policy
@close_kinds
def test_cancel_policy_cancels_the_app_task(how: str) -> None:
    probe = Probe()
    with serve(_sleeper(probe, 30), lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "cancelled", left)
        assert "finished" not in probe
        server_idle(srv)


@close_kinds
def test_cancel_policy_waits_for_the_grace_period(how: str) -> None:
    probe = Probe()
    with serve(_sleeper(probe, 30), lifespan="off", on_disconnect="cancel", disconnect_grace=0.5) as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        left = hang_up(sock, how)
        delay = assert_prompt(probe, "cancelled", left, within=0.5 + WITHIN)
        assert delay >= 0.4, f"cancelled {delay * 1000:.0f} ms after the client left, before the 0.5 s grace"
        server_idle(srv)


@close_kinds
def test_app_that_finishes_within_the_grace_period_is_not_cancelled(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        try:
            await asyncio.wait_for(signal_of(scope).wait(), 5)
            probe.mark("told")
            await asyncio.sleep(0.2)  # wrapping up, well within the 1 s grace
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        probe.mark("finished")

    with serve(app, lifespan="off", on_disconnect="cancel", disconnect_grace=1.0) as srv:
        before = tether.stats()
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "told", left)
        probe.wait("finished", 3)
        server_idle(srv)
        time.sleep(1.0)  # past the grace period: a stray timer would fire now
        assert "cancelled" not in probe
        after = tether.stats()
    assert after["abandoned_requests"] - before["abandoned_requests"] == 1
    assert after["cancelled_requests"] == before["cancelled_requests"]


@close_kinds
def test_notify_policy_never_cancels(how: str) -> None:
    probe = Probe()
    with serve(_sleeper(probe, 0.6), lifespan="off") as srv:  # on_disconnect="notify" is the default
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        hang_up(sock, how)
        probe.wait("finished", 3)
        assert "cancelled" not in probe
        assert probe.value("finished") is True  # it was told, just not cancelled
        server_idle(srv)


@close_kinds
@pytest.mark.parametrize("form", ["with", "async with", "nested"])
def test_shield_delays_the_cancel_until_it_exits(how: str, form: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        gone = signal_of(scope)
        await read_body(receive)
        try:
            if form == "with":
                with gone.shield():
                    probe.mark("shielded")
                    await asyncio.sleep(0.5)
                    probe.mark("shield_exit")
            elif form == "async with":
                async with gone.shield():
                    probe.mark("shielded")
                    await asyncio.sleep(0.5)
                    probe.mark("shield_exit")
            else:
                with gone.shield():
                    async with gone.shield():
                        probe.mark("shielded")
                        await asyncio.sleep(0.3)
                    probe.mark("inner_exit")
                    await asyncio.sleep(0.2)  # still shielded by the outer block
                    probe.mark("shield_exit")
            probe.mark("after_shield")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        probe.mark("not_cancelled")

    with serve(app, lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("shielded")
        left = hang_up(sock, how)
        cancelled = probe.wait("cancelled", 5)
        exited = probe.wait("shield_exit", 0)
        assert cancelled >= exited, "the cancel landed inside the shield"
        assert cancelled - exited < WITHIN, "the cancel was not delivered when the shield exited"
        assert cancelled - left >= 0.3
        assert "after_shield" in probe  # reached the first await after the block, and no further
        assert "not_cancelled" not in probe
        server_idle(srv)


class FakePool:
    """Stands in for a DB pool: counts connections checked out, records how each came back."""

    def __init__(self) -> None:
        self.in_use = 0
        self.returns: list = []

    def acquire(self) -> "FakePool":
        return self

    async def __aenter__(self) -> "FakePool":
        await asyncio.sleep(0)
        self.in_use += 1
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.in_use -= 1
        self.returns.append(exc_type)


@close_kinds
def test_cancel_releases_locks_and_pooled_resources(how: str) -> None:
    probe = Probe()
    lock = asyncio.Lock()
    pool = FakePool()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        if scope["path"] == "/second":
            await asyncio.wait_for(lock.acquire(), 1)
            lock.release()
            async with pool.acquire():
                pass
            await send(START)
            await send({"type": "http.response.body", "body": b"second ok"})
            return
        try:
            async with lock:
                async with pool.acquire():
                    probe.mark("holding")
                    await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        finally:
            probe.mark("released", (lock.locked(), pool.in_use))

    with serve(app, lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("holding")
        left = hang_up(sock, how)
        assert_prompt(probe, "cancelled", left)
        probe.wait("released")
        assert probe.value("released") == (False, 0)
        assert pool.returns == [asyncio.CancelledError]
        response = httpx.get(srv.url + "/second", timeout=5)
        assert response.status_code == 200 and response.text == "second ok"
        server_idle(srv)


@close_kinds
def test_complete_response_is_never_cancelled(how: str) -> None:
    """Work after the final body (like a background task) survives the client leaving."""
    probe = Probe()
    before = tether.stats()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send(START)
        await send({"type": "http.response.body", "body": b"complete"})
        probe.mark("responded")
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        probe.mark("background_done")

    with serve(app, lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request())
        recv_until(sock, b"complete")
        hang_up(sock, how)
        probe.wait("background_done", 3)
        assert "cancelled" not in probe
        server_idle(srv)
    after = tether.stats()
    assert after["disconnects_total"] == before["disconnects_total"]
    assert after["abandoned_requests"] == before["abandoned_requests"]


@close_kinds
@pytest.mark.parametrize("middleware", [False, True], ids=["plain", "BaseHTTPMiddleware"])
def test_starlette_background_task_is_never_cancelled(how: str, middleware: bool) -> None:
    probe = Probe()

    async def work() -> None:
        probe.mark("background_started")
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        probe.mark("background_done")

    async def route(request: Request) -> PlainTextResponse:
        return PlainTextResponse("complete", background=BackgroundTask(work))

    class Passthrough(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Any:
            return await call_next(request)

    app = Starlette(routes=[Route("/", route)], middleware=[Middleware(Passthrough)] if middleware else [])
    with serve(app, lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request())
        recv_until(sock, b"complete")
        hang_up(sock, how)
        probe.wait("background_done", 3)
        assert "cancelled" not in probe
        server_idle(srv)


# ---------------------------------------------------------------------- 5. the extension
@close_kinds
def test_extension_is_set_wait_and_event(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        gone = signal_of(scope)
        event = gone.event
        probe.mark("before", (gone.is_set(), isinstance(event, asyncio.Event), event.is_set()))
        try:
            await asyncio.wait_for(gone.wait(), 5)
        except asyncio.TimeoutError:
            probe.mark("timeout")
            return
        probe.mark("disconnect")
        probe.mark("after", (gone.is_set(), event.is_set(), gone.event is event))
        await asyncio.wait_for(gone.wait(), 0.1)  # once set, wait() returns at once
        await asyncio.wait_for(event.wait(), 0.1)
        probe.mark("done")

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("before")
        assert probe.value("before") == (False, True, False)
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert probe.value("after") == (True, True, True)
        probe.wait("done")
        server_idle(srv)


@close_kinds
def test_extension_event_is_set_on_disconnect(how: str) -> None:
    """Awaiting .event (created before), and .event first read after the client left."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        gone = signal_of(scope)
        if scope["path"] == "/early":
            event = gone.event
            probe.mark("ready")
            await asyncio.wait_for(event.wait(), 5)
            probe.mark("disconnect", event.is_set())
        else:
            await read_body(receive)
            probe.mark("ready")
            message = await asyncio.wait_for(receive(), 5)
            event = gone.event  # created now, after the fact: already set
            probe.mark("disconnect", (message["type"], isinstance(event, asyncio.Event), event.is_set()))

    with serve(app, lifespan="off") as srv:
        for path, expected in (("/early", True), ("/late", ("http.disconnect", True, True))):
            probe = Probe()
            sock = srv.connect()
            sock.sendall(request(path=path))
            probe.wait("ready")
            left = hang_up(sock, how)
            assert_prompt(probe, "disconnect", left)
            assert probe.value("disconnect") == expected, path
        server_idle(srv)


@close_kinds
@pytest.mark.parametrize("phase", ["before_response", "mid_stream"])
def test_extension_left_at_is_when_the_client_left(how: str, phase: str) -> None:
    """signal.left_at: None while the client is there, then the time.monotonic() it was seen leaving."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        gone = signal_of(scope)
        await read_body(receive)
        if phase == "mid_stream":
            await send(START)
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
        probe.mark("before", gone.left_at)
        await asyncio.wait_for(gone.wait(), 5)
        probe.mark("told", (gone.left_at, time.monotonic(), gone.left_at))

    with serve(app, lifespan="off") as srv:  # in this process: the test's clock is the server's
        sock = srv.connect()
        sock.sendall(request())
        if phase == "mid_stream":
            recv_until(sock, b"part")
        probe.wait("before")
        assert probe.value("before") is None
        left = hang_up(sock, how)
        assert_prompt(probe, "told", left)
        left_at, told, again = probe.value("told")
        assert isinstance(left_at, float) and again == left_at
        assert left <= left_at <= told, (left, left_at, told)
        server_idle(srv)


class Passthrough(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-middleware"] = "yes"
        return response


@close_kinds
def test_extension_reaches_route_behind_base_http_middleware(how: str, tether_logs: Any) -> None:
    probe = Probe()

    async def slow(request: Request) -> PlainTextResponse:
        gone = request.scope["extensions"]["tether.disconnect"]
        probe.mark("started")
        try:
            await asyncio.wait_for(gone.wait(), 5)
        except asyncio.TimeoutError:
            probe.mark("timeout")
            return PlainTextResponse("timeout")
        probe.mark("disconnect", gone.is_set())
        return PlainTextResponse("too late")

    app = Starlette(routes=[Route("/slow", slow)], middleware=[Middleware(Passthrough)])
    with serve(app, lifespan="off") as srv:
        ok = httpx.get(srv.url + "/nope", timeout=5)  # the middleware is really in the chain
        assert ok.status_code == 404 and ok.headers["x-middleware"] == "yes"
        sock = srv.connect()
        sock.sendall(request(path="/slow"))
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert probe.value("disconnect") is True
        server_idle(srv)
    assert error_records(tether_logs) == []


@close_kinds
def test_cancel_reaches_route_behind_base_http_middleware(how: str, tether_logs: Any) -> None:
    """The policy replaces an HttpDisconnectMiddleware: the route itself is cancelled."""
    probe = Probe()

    async def slow(request: Request) -> PlainTextResponse:
        probe.mark("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise
        finally:
            probe.mark("finally")
        return PlainTextResponse("too late")

    app = Starlette(routes=[Route("/slow", slow)], middleware=[Middleware(Passthrough)])
    with serve(app, lifespan="off", on_disconnect="cancel") as srv:
        sock = srv.connect()
        sock.sendall(request(path="/slow"))
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "cancelled", left)
        server_idle(srv)
    assert error_records(tether_logs) == []


@close_kinds
def test_fastapi_disconnect_event_dependency_behind_middleware(how: str, tether_logs: Any) -> None:
    probe = Probe()
    api = FastAPI()
    api.add_middleware(Passthrough)

    @api.get("/report")
    async def report(gone: asyncio.Event = Depends(disconnect_event)) -> dict:
        probe.mark("started")
        try:
            await asyncio.wait_for(gone.wait(), 5)
        except asyncio.TimeoutError:
            probe.mark("timeout")
        else:
            probe.mark("disconnect")
        return {"ok": True}

    with serve(api, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request(path="/report"))
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        server_idle(srv)
    assert error_records(tether_logs) == []


# ---------------------------------------------------------------------- 7. observability
def _phase_app(probe: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        gone = signal_of(scope)
        if scope["path"] == "/stream":
            await send(START)
            try:
                for i in range(200):
                    await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
                    await asyncio.sleep(0.05)
            except tether.ClientDisconnected:
                pass
        else:
            probe.mark("started")
            await asyncio.wait_for(gone.wait(), 5)
        probe.mark("disconnect")
        await asyncio.sleep(0.05)  # abandoned work: the app keeps running after the client left

    return app


PHASES = {
    "mid_body": request("POST", "/upload", (("Content-Length", "1000"),)) + b"x" * 10,
    "before_response": request(path="/wait"),
    "mid_stream": request(path="/stream"),
}


@close_kinds
@pytest.mark.parametrize("phase", list(PHASES))
def test_stats_count_the_disconnect_phase_and_log_499(how: str, phase: str, tether_logs: Any) -> None:
    probe = Probe()
    with serve(_phase_app(probe), lifespan="off") as srv:
        before = tether.stats()
        sock = srv.connect()
        sock.sendall(PHASES[phase])
        if phase == "mid_stream":
            recv_until(sock, b"tick 0\n")
        else:
            probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        server_idle(srv)
        after = tether.stats()
    for name in PHASES:
        delta = after["disconnects"][name] - before["disconnects"][name]
        assert delta == (1 if name == phase else 0), (name, before, after)
    assert after["disconnects_total"] - before["disconnects_total"] == 1
    assert after["abandoned_requests"] - before["abandoned_requests"] == 1
    assert after["abandoned_seconds"] - before["abandoned_seconds"] >= 0.04
    assert after["cancelled_requests"] == before["cancelled_requests"]
    lines = [r.getMessage() for r in tether_logs.records if r.name == "tether.access"]
    abandoned = [line for line in lines if " 499 " in line and " abandoned " in line]
    assert len(abandoned) == 1, lines
    assert "cancelled" not in abandoned[0]
    assert error_records(tether_logs) == []


@close_kinds
def test_stats_count_cancelled_requests(how: str, tether_logs: Any) -> None:
    probe = Probe()
    with serve(_sleeper(probe, 30, cleanup=0.05), lifespan="off", on_disconnect="cancel") as srv:
        before = tether.stats()
        sock = srv.connect()
        sock.sendall(request(path="/cancel-me"))
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "cancelled", left)
        server_idle(srv)
        after = tether.stats()
    assert after["disconnects"]["before_response"] - before["disconnects"]["before_response"] == 1
    assert after["abandoned_requests"] - before["abandoned_requests"] == 1
    assert after["cancelled_requests"] - before["cancelled_requests"] == 1
    assert after["abandoned_seconds"] - before["abandoned_seconds"] >= 0.04
    lines = [r.getMessage() for r in tether_logs.records if r.name == "tether.access"]
    abandoned = [line for line in lines if " 499 " in line and "abandoned" in line]
    assert len(abandoned) == 1 and "/cancel-me" in abandoned[0] and abandoned[0].endswith(" cancelled"), lines
    assert error_records(tether_logs) == []
