"""The app every server runs in bench/disconnect.py: /wait reports over UDP when it is ready
and when it sees http.disconnect (CLOCK_MONOTONIC, comparable across processes); /hello is
the background load."""

import os
import socket
import time

from bench.apps.lifespan import complete_lifespan

REPORT = ("127.0.0.1", int(os.environ.get("BENCH_REPORT_PORT", "9")))
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await complete_lifespan(receive, send)
    if scope["type"] != "http":
        return
    if scope["path"] == "/wait":
        trial = scope["query_string"]
        await receive()  # the (empty) body
        _udp.sendto(b"ready " + trial, REPORT)
        message = await receive()
        seen = time.monotonic()
        if message["type"] == "http.disconnect":
            _udp.sendto(b"gone " + trial + b" " + repr(seen).encode(), REPORT)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
