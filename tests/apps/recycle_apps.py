"""Apps for the recycling and Gunicorn tests (importable by server subprocesses: tests/apps is on
their PYTHONPATH).

``app``: GET / -> {"pid": ...}; /alloc?mb=N keeps N MiB alive in this worker (touched, so it is
resident); /sleep?s=N answers after N s; /block?s=N blocks the event loop for N s; /wait waits for
the client to leave and prints what the app saw (``GONE <how>``, or ``CANCELLED`` if the task was
cancelled); /ws is a WebSocket echo.
"""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

HELD: list = []


async def _json(send, body, status=200):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            print(f"LIFESPAN SHUTDOWN {os.getpid()}", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _websocket(scope, receive, send):
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": f"echo {os.getpid()}: {message.get('text')}"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/alloc":
        HELD.append(b"\x01" * (int(query.get("mb", "1")) * 1024 * 1024))
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", "1")))
    elif path == "/block":
        time.sleep(float(query.get("s", "1")))  # deliberately blocks this worker's event loop
    elif path == "/wait":
        print(f"WAITING {os.getpid()}", flush=True)
        gone = scope["extensions"]["tether.disconnect"]
        try:
            message = await receive()  # the (empty) body
            if message["type"] == "http.request":
                message = await receive()  # then: waits for the client to leave
            print(f"GONE {message['type']} signal={gone.is_set()}", flush=True)
            await asyncio.sleep(30)  # abandoned work: cancelled under --on-disconnect cancel
            print("NOT CANCELLED", flush=True)
        except asyncio.CancelledError:
            print("CANCELLED", flush=True)
            raise
        return
    await _json(send, {
        "pid": os.getpid(), "path": path, "http_version": scope["http_version"], "scheme": scope["scheme"],
        "client": list(scope["client"]) if scope.get("client") else None, "root_path": scope.get("root_path", ""),
    })


def wsgi_app(environ, start_response):
    """A WSGI app: TetherWorker refuses it at boot."""
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"wsgi"]
