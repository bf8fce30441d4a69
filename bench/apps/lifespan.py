"""The lifespan answer every bench app gives: each startup/shutdown message completes at once."""


async def complete_lifespan(receive, send):
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return
