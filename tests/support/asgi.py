"""The app side of a test: small ASGI pieces the test apps are built from.

Whatever waits here waits on the server's loop without blocking it, and is bounded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable

from tests.support.http1 import TIMEOUT

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def signal_of(scope: dict) -> Any:
    """The scope's ``tether.disconnect`` extension (a DisconnectSignal)."""
    return scope["extensions"]["tether.disconnect"]


async def read_body(receive: Any) -> bytes:
    body = b""
    for _ in range(100000):
        message = await receive()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body
    raise AssertionError("body never ended")


async def receive_body(receive: Any) -> bytes | None:
    """The whole request body, or None if the client left first (http.disconnect)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def respond(send: Any, body: bytes = b"ok", status: int = 200, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers if headers is not None else [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def respond_with_addresses(scope: dict, send: Any) -> None:
    """A JSON body with what the scope says of the connection: client, server, scheme, version
    (the PROXY protocol tests read them back)."""
    body = json.dumps({"client": scope["client"], "server": scope["server"], "scheme": scope["scheme"],
                       "http_version": scope["http_version"]}).encode()
    await respond(send, body, headers=[(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))])


async def echo_path(scope: dict, receive: Any, send: Any) -> None:
    """Responds with the request path (and the method) after reading the body."""
    body = await read_body(receive)
    await respond(send, f"{scope['method']} {scope['path']} {len(body)}".encode())


class Gate:
    """A flag the test thread opens and server-side apps wait on (polling, bounded)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    async def wait(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self._event.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("gate never opened")
            await asyncio.sleep(0.005)


def lifespan_ok(startup: Callable[[], Any] | None = None, shutdown: Callable[[], Any] | None = None) -> Callable:
    """A lifespan handler running optional async startup/shutdown hooks."""

    async def handle(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if startup is not None:
                        await startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if shutdown is not None:
                    await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return handle
