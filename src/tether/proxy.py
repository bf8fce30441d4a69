"""--proxy-headers: take client address and scheme from X-Forwarded-* set by a trusted proxy."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any


def trusted_proxy(host: str, settings: Any) -> bool:
    """Is ``host`` in --forwarded-allow-ips? (also the gate for --proxy-protocol headers)"""
    return settings.trust_all_proxies or _trusted_by(host, tuple(settings.trusted_proxies))


@lru_cache(maxsize=1024)
def _trusted_by(host: str, networks: tuple) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a unix socket path: trusted only with "*"
    return any(address in network for network in networks)


def apply_proxy_headers(scope: dict, settings: Any) -> None:
    forwarded_for = forwarded_proto = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for = value
        elif name == b"x-forwarded-proto":
            forwarded_proto = value
    if forwarded_for is None and forwarded_proto is None:
        return  # the common case costs one scan of the header names
    client = scope["client"]
    if client is None or not trusted_proxy(client[0], settings):
        return
    if forwarded_proto is not None:
        proto = forwarded_proto.decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https", "ws", "wss"):
            secure = proto in ("https", "wss")  # the scheme follows the scope type, not the proxy's word
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
    if forwarded_for is not None:
        # The rightmost address not itself a trusted proxy is the client.
        hosts = [item.strip() for item in forwarded_for.decode("latin-1").split(",") if item.strip()]
        for host in reversed(hosts):
            if not trusted_proxy(host, settings) or host == hosts[0]:
                scope["client"] = (host, 0)
                break
