"""A plain Starlette application, written as its docs teach, for tests/test_frameworks.py.

``create_app(marker)`` builds it; ``app`` is the instance the CLI imports, its shutdown marker
file taken from the FRAMEWORK_SHUTDOWN_MARKER environment variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

HAS_MULTIPART = importlib.util.find_spec("python_multipart") is not None or importlib.util.find_spec("multipart") is not None

# What the in-process tests can observe from the test thread (CLI tests look at the wire only).
EVENTS: dict = {}


def create_app(marker: str | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.started_by = "starlette-lifespan"
        yield {"greeting": "hello from lifespan"}
        if marker:
            with open(marker, "w") as fh:
                fh.write("starlette shutdown")

    async def root(request: Request) -> PlainTextResponse:
        return PlainTextResponse("starlette root")

    async def about(request: Request) -> PlainTextResponse:
        return PlainTextResponse("about starlette")

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({
            "item_id": request.path_params["item_id"],
            "q": request.query_params.get("q"),
            "tags": request.query_params.getlist("tag"),
        })

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"echo": await request.json()})

    async def form(request: Request) -> JSONResponse:
        async with request.form() as data:
            fields = {}
            for key, value in data.multi_items():
                if hasattr(value, "read"):
                    content = await value.read()
                    fields[key] = {"filename": value.filename, "size": len(content),
                                   "sha256": hashlib.sha256(content).hexdigest()}
                else:
                    fields[key] = value
        return JSONResponse(fields)

    async def stream(request: Request) -> StreamingResponse:
        count = int(request.query_params.get("n", "100"))

        async def numbers():
            for i in range(count):
                yield f"line {i}\n".encode()
                if i % 10 == 0:
                    await asyncio.sleep(0)

        return StreamingResponse(numbers(), media_type="text/plain")

    async def endless(request: Request) -> StreamingResponse:
        key = request.query_params["key"]

        async def ticks():
            EVENTS[key] = "started"
            try:
                i = 0
                while True:
                    yield b"tick %d\n" % i
                    i += 1
                    await asyncio.sleep(0.02)
            finally:
                EVENTS[key] = "generator closed"

        return StreamingResponse(ticks(), media_type="text/plain")

    async def upload(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom from a Starlette route")

    async def file(request: Request) -> FileResponse:
        # Starlette sends a whole file with http.response.pathsend when the server offers it.
        return FileResponse(__file__, media_type="text/x-python")

    async def background(request: Request) -> PlainTextResponse:
        key = request.query_params["key"]

        async def after_response() -> None:
            await asyncio.sleep(0.05)
            EVENTS[key] = "background done"

        return PlainTextResponse("accepted", background=BackgroundTask(after_response))

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": request.state.greeting, "started_by": request.app.state.started_by})

    routes = [
        Route("/", root),
        Route("/about", about),
        Route("/items/{item_id:int}", item),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/endless", endless),
        Route("/upload", upload, methods=["POST"]),
        Route("/boom", boom),
        Route("/state", state),
        Route("/file", file),
        Route("/background", background),
    ]
    if HAS_MULTIPART:
        routes.append(Route("/form", form, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


app = create_app(os.environ.get("FRAMEWORK_SHUTDOWN_MARKER"))
