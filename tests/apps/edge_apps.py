"""ASGI apps for the edge and process tests (CLI, workers, reload, TLS, lifespan, Python API).

Importable by a `python -m tether` subprocess: tests/apps is on its PYTHONPATH.
"""

import asyncio
import json
import os
import sys
import time
from urllib.parse import parse_qs


async def _respond(send, body, status=200, content_type=b"text/plain"):
    if isinstance(body, str):
        body = body.encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


async def _plain_lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


def _query(scope):
    return {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}


async def info(scope, receive, send):
    """GET / -> the scope as JSON; /sleep?s=N answers after N s; /block?ms=N blocks the loop first;
    /exit kills the worker (os._exit)."""
    if scope["type"] == "lifespan":
        await _plain_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    query = _query(scope)
    if scope["path"].endswith("/sleep"):
        seconds = float(query.get("s", "1"))
        print(f"SLEEP START {seconds}", flush=True)
        await asyncio.sleep(seconds)
        print(f"SLEEP DONE {seconds}", flush=True)
        await _respond(send, f"slept {seconds}")
        return
    if scope["path"].endswith("/exit"):
        os._exit(3)  # a worker dying under the app's hand (tests/test_process_faults.py)
    if scope["path"].endswith("/block"):
        time.sleep(float(query.get("ms", "20")) / 1000)  # deliberately blocks this worker's loop
    loop = asyncio.get_running_loop()
    tls = scope.get("extensions", {}).get("tls")
    body = {
        "type": scope["type"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "query_string": scope["query_string"].decode(),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "state": {k: v for k, v in scope.get("state", {}).items() if isinstance(v, (str, int, float))},
        "pid": os.getpid(),
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "tls": bool(tls) if tls is not None else None,
    }
    await _respond(send, json.dumps(body), content_type=b"application/json")


async def stateful(scope, receive, send):
    """Lifespan sets state; shutdown writes $TETHER_TEST_SHUTDOWN_FILE; GET -> scope["state"]."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from startup"
                scope["state"]["startup_pid"] = os.getpid()
                print("STARTUP RAN", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                path = os.environ.get("TETHER_TEST_SHUTDOWN_FILE")
                if path:
                    with open(path, "a") as fh:
                        fh.write(f"shutdown ran in {os.getpid()}\n")
                print("SHUTDOWN RAN", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    state = {k: v for k, v in scope.get("state", {}).items() if isinstance(v, (str, int, float))}
    if scope["query_string"] == b"mutate=1":
        scope["state"]["mutated_by_a_request"] = "yes"  # must not leak into the next request
    await _respond(send, json.dumps(state), content_type=b"application/json")


async def startup_failed(scope, receive, send):
    """Answers lifespan.startup with lifespan.startup.failed and a message."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database is down (edge test)"})
        return
    await _respond(send, "should never serve")


async def startup_raises(scope, receive, send):
    """Raises from the lifespan startup."""
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("cannot reach the cache (edge test)")
    await _respond(send, "should never serve")


async def no_lifespan(scope, receive, send):
    """An app that does not support lifespan: raises on any scope but http."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r} (edge test)")
    await _respond(send, "serving without lifespan")


async def shutdown_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush the queue (edge test)"})
        return
    await _respond(send, "ok")


def make_app():
    """A factory (for --factory): returns info with a marker in the state."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await _plain_lifespan(receive, send)
            return
        await _respond(send, "made by the factory")

    return app

