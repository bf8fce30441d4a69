"""Listening sockets: --host/--port, --uds, --fd. Bound once, shared by every worker."""

from __future__ import annotations

import os
import socket
import stat

from ..config import Config
from ..errors import ConfigError


def bind_socket(config: Config) -> socket.socket:
    try:
        if config.fd is not None:
            sock = socket.socket(fileno=config.fd)
        elif config.uds:
            path = config.uds
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o666)
        else:
            family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((config.host, config.port))
        sock.listen(config.backlog)
    except OSError as exc:
        where = config.uds or (f"fd {config.fd}" if config.fd is not None else f"{config.host}:{config.port}")
        raise ConfigError(f"could not listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    if config.tcp_keepalive and sock.family in (socket.AF_INET, socket.AF_INET6):
        set_keepalive_options(sock, config.tcp_keepalive_idle, config.tcp_keepalive_interval, config.tcp_keepalive_count)
    return sock


def describe(sock: socket.socket, is_ssl: bool) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if is_ssl else 'http'}://{host}:{port}"


def set_keepalive_options(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    """TCP keep-alive on the listening socket; Linux copies it onto every accepted socket."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
