"""The request task's start (once the read that brought its head is parsed): whatever the
version and protocol, the app sees the same world: a current task of its own, sniffio/anyio
seeing asyncio, contextvars of its own, the cancel policy, failures answered 500, pipelined
requests answered in order."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import anyio
import httpx
import pytest
import sniffio

from tests.support.h2 import H2Client
from tests.support.http1 import RawClient, request
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

VAR: contextvars.ContextVar = contextvars.ContextVar("test_app_start_var", default="unset")


async def _respond(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_the_app_has_a_task_of_its_own_sniffio_anyio_and_its_own_contextvars(http2: bool) -> None:
    seen: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        before = VAR.get()
        VAR.set(scope["path"])  # (must not reach the server's context, nor another request)
        library = sniffio.current_async_library()
        async with anyio.create_task_group() as group:  # anyio needs its current task
            group.start_soon(anyio.sleep, 0)
        await anyio.sleep(0)
        seen.append({"task": task is not None and task is asyncio.current_task() and not task.done(),
                     "before": before, "library": library, "after": VAR.get()})
        await _respond(send, scope["path"].encode())

    with serve(app, lifespan="off") as srv:
        paths = ["/a", "/b", "/c"]
        if http2:
            with H2Client(srv.port) as client:
                streams = [client.request(path) for path in paths]
                bodies = [bytes(client.response(sid).data) for sid in streams]
        else:
            with httpx.Client(timeout=10) as client:  # one connection: the contexts must not leak across it
                bodies = [client.get(srv.url + path).content for path in paths]
        assert srv.call(VAR.get) == "unset"
    assert bodies == [p.encode() for p in paths]
    assert seen == [{"task": True, "before": "unset", "library": "asyncio", "after": p} for p in paths]


def test_pipelined_requests_are_answered_in_order_and_nothing_is_left_running() -> None:
    order: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            await asyncio.sleep(0.01)  # (a real wait: the task goes on after its first step)
        order.append(scope["path"])
        await _respond(send, scope["path"].encode())

    with serve(app, lifespan="off") as srv, RawClient.to(srv) as client:
        paths = ["/a", "/wait", "/b", "/wait", "/c"] * 20
        client.send(b"".join(request("GET", path) for path in paths))
        assert [client.read_response().body for _ in paths] == [p.encode() for p in paths]
        wait_until(lambda: srv.call(lambda: (srv.state.in_flight, len(srv.state.tasks))) == (0, 0),
                   what="no request in flight and no task left")
    assert order == paths


@pytest.mark.parametrize("when", ["first_step", "after_a_wait"])
def test_an_app_failing_is_answered_500_whenever_it_fails(when: str) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if when == "after_a_wait":
            await asyncio.sleep(0)
        raise RuntimeError("boom")

    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url, timeout=10).status_code == 500
        assert httpx.get(srv.url, timeout=10).status_code == 500  # (and the worker keeps serving)


def test_the_cancel_policy_reaches_an_app_started_after_its_read() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        probe.mark("started")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            probe.mark("cancelled")
            raise

    with serve(app, lifespan="off", on_disconnect="cancel") as srv, RawClient.to(srv) as client:
        client.send(request())
        probe.wait("started")
        client.sock.close()
        probe.wait("cancelled", timeout=5)
