"""The app of tests/test_metrics.py: chosen statuses, a request that waits for its client to
leave, a WebSocket echo. Importable by a `python -m tether` subprocess (tests/apps)."""

import asyncio
import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
            await send({"type": "websocket.close", "code": 1000})
        return
    path = scope["path"]
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"status"})
        return
    if path == "/wait":
        # Held until the client leaves (at most 30 s), then keeps "working" 0.2 s: abandoned work.
        print("WAIT START", flush=True)
        try:
            message = await asyncio.wait_for(receive(), 30)
            while message["type"] != "http.disconnect":
                message = await asyncio.wait_for(receive(), 30)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.2)
        print("WAIT DONE", flush=True)
        return
    body = json.dumps({"pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
