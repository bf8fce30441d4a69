"""Helpers for Starlette and FastAPI apps (no import of either: anything with ``.scope`` works).

    from fastapi import Depends, FastAPI
    from tether.contrib import disconnect_event

    @app.get("/report")
    async def report(gone: asyncio.Event = Depends(disconnect_event)):
        ...                      # gone.is_set() at checkpoints, or race work against gone.wait()

They read ``scope["extensions"]["tether.disconnect"]``, which never consumes ``receive()``
messages and reaches the route through any middleware (BaseHTTPMiddleware included).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .cycle import DisconnectSignal, Shield

try:  # the annotation FastAPI needs to inject the request into a dependency
    from starlette.requests import HTTPConnection
except ImportError:  # pragma: no cover - Starlette is optional
    HTTPConnection = Any  # type: ignore[misc,assignment]

EXTENSION = "tether.disconnect"


def disconnect_signal(request: HTTPConnection) -> DisconnectSignal:
    """The request's DisconnectSignal, from a Starlette/FastAPI Request or an ASGI scope."""
    scope = request if isinstance(request, dict) else request.scope
    signal = scope.get("extensions", {}).get(EXTENSION)
    if signal is None:
        raise RuntimeError(f"scope extension {EXTENSION!r} missing: is this app served by Tether?")
    return signal


def disconnect_event(request: HTTPConnection) -> asyncio.Event:
    """An asyncio.Event set when the client leaves. Usable as a FastAPI dependency."""
    return disconnect_signal(request).event


def is_disconnected(request: HTTPConnection) -> bool:
    """Non-blocking check, without consuming receive() (unlike Request.is_disconnected())."""
    return disconnect_signal(request).is_set()


def shield(request: HTTPConnection) -> Shield:
    """``with shield(request):`` keeps ``--on-disconnect cancel`` out of a critical section."""
    return disconnect_signal(request).shield()
