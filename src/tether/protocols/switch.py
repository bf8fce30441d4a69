"""Which wire protocol serves a connection, and the hand-overs between them.

The one module that knows every protocol. A connection starts as HTTP/1.1 (``new_connection``
is the listener's protocol factory), and HTTP/1.1 hands it over, through its ServerState's
``switch`` (this module), to HTTP/2 (``--http 2``, ALPN ``h2`` over TLS, the prior-knowledge
preface, an ``Upgrade: h2c``) or to WebSocket (an ``Upgrade: websocket``). The protocol modules
never import one another.
"""

from __future__ import annotations

from typing import Any

from .http1 import HTTP1Protocol
from .http2 import H2Protocol

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def new_connection(settings: Any) -> HTTP1Protocol:
    return HTTP1Protocol(settings)


def starts_as_http2(settings: Any, transport: Any) -> bool:
    """At connection time: HTTP/2 only (``--http 2``), or TLS whose ALPN chose ``h2``."""
    if settings.http == "2":
        return True
    if settings.http != "auto" or not settings.is_ssl:
        return False
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"


def is_h2_preface(data: bytes) -> bool:
    """Does a new plaintext connection start with the HTTP/2 preface (prior knowledge)?"""
    if len(data) < len(H2_PREFACE):
        return H2_PREFACE.startswith(data)
    return data.startswith(H2_PREFACE)


def to_http2(settings: Any, transport: Any, server: Any, client: Any, fd: int, data: bytes,
             upgrade: tuple | None = None) -> None:
    """HTTP/2 takes the transport: ``data`` is what was read (the preface and what follows), or
    ``upgrade`` the h2c request (``(settings_header, scope)``), which becomes stream 1."""
    protocol = H2Protocol(settings, transport, server, client, fd)
    transport.set_protocol(protocol)
    protocol.start(data, upgrade)


def to_websocket(settings: Any, transport: Any, fd: int, scope: dict, early_data: bytes) -> None:
    """The WebSocket session takes the transport after the upgrade request ``scope``."""
    from .websocket import WebSocketProtocol  # (imports websockets only when first used)

    protocol = WebSocketProtocol(settings, transport, fd)
    transport.set_protocol(protocol)
    protocol.start(scope, early_data)
