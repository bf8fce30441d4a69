"""What one worker's connections share: settings derived once from Config, live counters.

Protocols read this; only the server writes it. It is built once per worker so that the
per-request path reads plain attributes instead of re-deriving anything from Config.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from email.utils import formatdate
from typing import Callable

from ..config import Config
from ..logs import error_logger
from ..protocols import switch
from ..protocols.hangup import HangupWatcher

FD_WARNING_INTERVAL = 10.0  # seconds between two "out of file descriptors" warnings
SWEEP_SLICE = 64  # connections checked per pass of the event loop by the once-a-second sweep


class WebSocketSettings:
    """The --ws-* options, read once."""

    __slots__ = ("max_size", "max_queue", "ping_interval", "ping_timeout", "per_message_deflate", "close_timeout")

    def __init__(self, config: Config) -> None:
        self.max_size = config.ws_max_size
        self.max_queue = config.ws_max_queue
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.per_message_deflate = config.ws_per_message_deflate
        self.close_timeout = config.ws_close_timeout


class HTTP2Settings:
    """The --h2-* options, read once."""

    __slots__ = ("max_concurrent_streams", "max_header_list_size", "initial_window_size", "max_frame_size",
                 "ping_interval", "ping_timeout")

    def __init__(self, config: Config) -> None:
        self.max_concurrent_streams = config.h2_max_concurrent_streams
        self.max_header_list_size = config.h2_max_header_list_size
        self.initial_window_size = config.h2_initial_window_size
        self.max_frame_size = config.h2_max_frame_size
        self.ping_interval = config.h2_ping_interval
        self.ping_timeout = config.h2_ping_timeout


class ServerState:
    __slots__ = (
        "app", "loop", "config", "connections", "tasks", "lifespan_state", "hangups", "switch",
        # settings, derived once
        "root_path", "access_log_format", "cancel_on_disconnect", "disconnect_grace", "timeout_request", "tracks_work",
        "limit_concurrency", "timeout_keep_alive", "default_header_lines", "date_header",
        "proxy_headers", "trust_all_proxies", "trusted_proxies", "max_head_size",
        "limit_request_line", "limit_request_fields", "limit_request_field_size", "limit_request_body",
        "timeout_request_header", "timeout_request_body", "timeout_write",
        "max_requests", "is_ssl", "ws_enabled", "ws", "http", "h2", "default_header_pairs", "h2_default_headers",
        # live values
        "date_line", "head_lines", "in_flight", "total_requests", "shutting_down", "on_max_requests",
        "fd_baseline", "fd_warned_at",
    )

    def __init__(self, config: Config, app: Callable, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.config = config
        self.connections: set = set()
        self.tasks: set = set()
        self.lifespan_state: dict = {}
        self.hangups = HangupWatcher(loop)
        self.switch = switch  # how HTTP/1.1 hands a connection over to HTTP/2 or WebSocket
        self.root_path = config.root_path
        self.access_log_format = config.access_log_format
        self.cancel_on_disconnect = config.on_disconnect == "cancel"
        self.disconnect_grace = config.disconnect_grace
        self.timeout_request = config.timeout_request
        self.tracks_work = self.cancel_on_disconnect or config.timeout_request is not None
        self.limit_concurrency = config.limit_concurrency
        self.timeout_keep_alive = config.timeout_keep_alive
        lines = []
        if config.server_header:
            lines.append(b"server: tether\r\n")
        for name, value in config.encoded_default_headers():
            lines.append(name + b": " + value + b"\r\n")
        self.default_header_lines = b"".join(lines)
        self.default_header_pairs = [(b"server", b"tether")] if config.server_header else []
        self.default_header_pairs += config.encoded_default_headers()
        self.date_header = config.date_header
        self.proxy_headers = config.proxy_headers
        self.trust_all_proxies, proxies = config.forwarded_ips()
        self.trusted_proxies = tuple(proxies)
        self.limit_request_line = config.limit_request_line
        self.limit_request_fields = config.limit_request_fields
        self.limit_request_field_size = config.limit_request_field_size
        self.limit_request_body = config.limit_request_body
        # The whole head is bounded too, so that a head llhttp is still holding stays bounded.
        self.max_head_size = max(65536, config.limit_request_line + 2 * config.limit_request_field_size)
        self.timeout_request_header = config.timeout_request_header
        self.timeout_request_body = config.timeout_request_body
        self.timeout_write = config.timeout_write
        self.max_requests = None
        self.is_ssl = config.is_ssl
        self.ws_enabled = config.ws != "none"
        self.ws = WebSocketSettings(config)
        self.http = config.http
        self.h2 = HTTP2Settings(config)
        self.date_line = b""
        self.in_flight = 0
        self.total_requests = 0
        self.shutting_down = False
        self.on_max_requests: Callable[[], None] | None = None
        self.fd_baseline = _open_fds()
        self.fd_warned_at = 0.0
        self.tick()

    def tick(self) -> None:
        """Once a second: refresh the Date header, close idle connections, enforce timeouts."""
        now = time.time()
        if self.date_header:
            self.date_line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        self.head_lines = self.default_header_lines + self.date_line  # once a second, not per response
        self.h2_default_headers = self.default_header_pairs + ([(b"date", self.date_line[6:-2])] if self.date_line else [])
        now = self.loop.time()
        self._check_descriptors(now)
        self._sweep(list(self.connections), 0, now, now - self.timeout_keep_alive)

    def _sweep(self, conns: list, start: int, now: float, idle_deadline: float) -> None:
        """Check SWEEP_SLICE connections, then let the loop serve before the next slice: a
        thousand slow clients that time out together (slowloris) then cost many short pauses
        instead of one long stall that every request in flight would wait through."""
        end = start + SWEEP_SLICE
        connections = self.connections
        for conn in conns[start:end]:
            if conn not in connections:
                continue  # (closed since the sweep began)
            if conn.idle_since and conn.idle_since < idle_deadline:
                conn.close_idle()
            else:
                conn.check_timeouts(now)
        if end < len(conns):
            self.loop.call_soon(self._sweep, conns, end, now, idle_deadline)

    def _check_descriptors(self, now: float) -> None:
        """EMFILE on accept is handled by the event loop (libuv accepts and closes the excess
        connection, asyncio retries a second later) but neither says so: this does."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        in_use = self.fd_baseline + len(self.connections)
        if limit != resource.RLIM_INFINITY and in_use >= limit - 8 and now - self.fd_warned_at >= FD_WARNING_INTERVAL:
            self.fd_warned_at = now
            error_logger.warning(
                "Out of file descriptors: %d connections open, limit %d (ulimit -n): new connections are "
                "refused until some close", len(self.connections), limit)

    def request_counted(self) -> None:
        self.total_requests += 1
        if self.max_requests is not None and self.total_requests >= self.max_requests and self.on_max_requests:
            callback, self.on_max_requests = self.on_max_requests, None
            callback()


def _open_fds() -> int:
    """Descriptors this process has open (the listening sockets, the loop's own, files)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # (minus the one listdir used)
    except OSError:
        return 16
