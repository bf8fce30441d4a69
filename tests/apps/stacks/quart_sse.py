"""Quart: server-sent events from an idle generator whose ``finally`` records when it ran.

    GET /sse?id=ID     one event, then idle for an hour; ``finally`` records "end"
    GET /ticks?n=10    an event a second (a stream that must outlive --timeout-request)
    GET /ok
"""

from __future__ import annotations

import asyncio

from quart import Quart, request

from . import _record

_record.capture_warnings("quart")
app = Quart(__name__)
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@app.get("/sse")
async def sse():  # type: ignore[no-untyped-def]
    rid = _record.request_id(request.args.get("id"))

    async def events():  # type: ignore[no-untyped-def]
        try:
            _record.record("start", rid)
            yield b"data: hello\n\n"
            await asyncio.sleep(3600)
        finally:
            _record.record("end", rid, "finally")

    response = await app.make_response((events(), 200, SSE_HEADERS))
    response.timeout = None  # a stream may last longer than Quart's RESPONSE_TIMEOUT
    return response


@app.get("/ticks")
async def ticks():  # type: ignore[no-untyped-def]
    count = int(request.args.get("n", "10"))

    async def events():  # type: ignore[no-untyped-def]
        for n in range(count):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(1)

    response = await app.make_response((events(), 200, SSE_HEADERS))
    response.timeout = None
    return response


@app.get("/ok")
async def ok():  # type: ignore[no-untyped-def]
    return {"ok": True}
