"""A plain FastAPI application for tests/test_frameworks.py (see starlette_app.py for the pattern)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

HAS_MULTIPART = importlib.util.find_spec("python_multipart") is not None or importlib.util.find_spec("multipart") is not None


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class PublicUser(BaseModel):
    id: int
    name: str


class Page(BaseModel):
    offset: int
    limit: int


def pagination(offset: int = 0, limit: int = 10) -> Page:
    return Page(offset=offset, limit=min(limit, 50))


def require_token(x_token: Annotated[str | None, Header()] = None) -> str:
    if x_token != "secret-token":
        raise HTTPException(status_code=401, detail="bad token")
    return x_token


def create_app(marker: str | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.started_by = "fastapi-lifespan"
        yield {"greeting": "hello from fastapi lifespan"}
        if marker:
            with open(marker, "w") as fh:
                fh.write("fastapi shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=PlainTextResponse)  # @app.get has no HEAD
    async def root() -> str:
        return "fastapi root"

    @app.get("/about")
    def about() -> dict:  # a sync route: FastAPI runs it in its thread pool
        return {"about": "fastapi"}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None, page: Page = Depends(pagination)) -> dict:
        return {"item_id": item_id, "q": q, "offset": page.offset, "limit": page.limit}

    @app.post("/items")
    async def create_item(item: Item) -> Item:
        return item

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict:
        return {"echo": payload}

    @app.get("/users/{user_id}", response_model=PublicUser)
    async def read_user(user_id: int, token: Annotated[str, Depends(require_token)]) -> Any:
        # The response model must strip the password out.
        return {"id": user_id, "name": f"user{user_id}", "password": "hunter2"}

    @app.get("/stream")
    async def stream(n: int = 100) -> StreamingResponse:
        async def numbers():
            for i in range(n):
                yield f"line {i}\n".encode()
                if i % 10 == 0:
                    await asyncio.sleep(0)

        return StreamingResponse(numbers(), media_type="text/plain")

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        body = await request.body()
        return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("boom from a FastAPI route")

    @app.get("/state")
    async def state(request: Request) -> dict:
        return {"greeting": request.state.greeting, "started_by": request.app.state.started_by}

    if HAS_MULTIPART:  # FastAPI refuses to declare Form/File routes without python-multipart
        @app.post("/form")
        async def form(name: Annotated[str, Form()], age: Annotated[int, Form()]) -> dict:
            return {"name": name, "age": age}

        @app.post("/files")
        async def files(note: Annotated[str, Form()], doc: Annotated[UploadFile, File()]) -> dict:
            content = await doc.read()
            return {"note": note, "filename": doc.filename, "size": len(content),
                    "sha256": hashlib.sha256(content).hexdigest()}

    return app


app = create_app(os.environ.get("FRAMEWORK_SHUTDOWN_MARKER"))
