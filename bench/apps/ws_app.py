"""The app every server runs in bench/ws.py: accept, then echo every message."""

from bench.apps.lifespan import complete_lifespan


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await complete_lifespan(receive, send)
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
