"""The app every server runs in bench/throughput.py (plain ASGI, no framework)."""

from bench.apps.lifespan import complete_lifespan

BODY_64K = b"x" * 65536
BODY_32M = b"z" * (32 * 1024 * 1024)  # bench/h2.py large-body: one send() of 32 MiB
CHUNK = b"y" * 100


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await complete_lifespan(receive, send)
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(100):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = BODY_64K if path == "/64k" else BODY_32M if path == "/32m" else b"Hello, world!"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
