"""--proxy-protocol: the PROXY protocol header (HAProxy's v1 text and v2 binary forms).

A load balancer that speaks it (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB, stunnel,
Caddy, Traefik) writes one header at the start of each connection saying who the real client
is, before any HTTP or TLS byte. Two parts here:

* ``parse_proxy_header(data, mode)``: sans-I/O, bytes in -> a ``ProxyHeader``, or the number of
  bytes still needed at least, or ``ProxyHeaderError``. "Still needed" bytes all belong to the
  header, so a reader that asks for no more than that never reads past it (which matters with
  TLS: the bytes after the header are the TLS handshake, which is not ours to read).
* ``ProxyHeaderReader``: the asyncio protocol each accepted connection starts with. It refuses
  peers not in --forwarded-allow-ips, reads the header within --timeout-request-header, then
  hands the transport to HTTP/1.1 (``switch.new_connection``; after ``loop.start_tls`` when
  --ssl-certfile is set) with the addresses from the header. A missing or malformed header closes the
  connection; nothing reaches the app.

The specification: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

from ..logs import error_logger
from ..protocols import switch
from ..proxy import trusted_proxy

MODES = ("off", "v1", "v2", "auto")
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included ("PROXY TCP6" + two full IPv6 addresses + ports)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 4096  # the whole v2 header, TLVs included (nginx's NGX_PROXY_PROTOCOL_MAX_HEADER)
# The shortest v1 lines, by protocol: what a reader may ask for before it sees the CRLF.
_V1_MIN = {b"UNKNOWN": 15, b"TCP4": 32, b"TCP6": 22}  # "PROXY UNKNOWN\r\n", "... 0.0.0.0 0.0.0.0 0 0\r\n", "... :: :: 0 0\r\n"
# v2 address families (high nibble of byte 13) -> (socket family, length of the address block).
_V2_FAMILIES = {0x1: (socket.AF_INET, 12), 0x2: (socket.AF_INET6, 36), 0x3: (socket.AF_UNIX, 216)}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header (the connection is closed)."""


class ProxyHeader:
    """A complete header. ``client``/``server`` are ASGI-style addresses, or None for both when
    the header carries none (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC): then the socket's addresses hold."""

    __slots__ = ("version", "command", "client", "server", "length")

    def __init__(self, version: int, command: str, client: Any, server: Any, length: int) -> None:
        self.version = version
        self.command = command  # "TCP4", "TCP6", "UNKNOWN" (v1); "PROXY", "LOCAL" (v2)
        self.client = client
        self.server = server
        self.length = length  # bytes the header took; what follows is the connection's own data

    @property
    def has_addresses(self) -> bool:
        return self.server is not None or self.client is not None

    def __repr__(self) -> str:
        return f"ProxyHeader(v{self.version} {self.command} client={self.client} server={self.server} length={self.length})"


def parse_proxy_header(data: bytes | bytearray, mode: str = "auto") -> ProxyHeader | int:
    """Parse a PROXY header at the start of ``data`` (``mode``: v1, v2 or auto).

    Returns the header, or ``n >= 1``: at least n more bytes are needed, and every byte of
    ``data`` belongs to the header. Raises ProxyHeaderError if ``data`` cannot begin one.
    """
    if not data:
        return 15 if mode != "v2" else 16
    if data[0] == 0x0D and mode != "v1":  # "\r": the v2 signature's first byte
        return _parse_v2(data)
    if data[0] == 0x50 and mode != "v2":  # "P"
        return _parse_v1(data)
    raise ProxyHeaderError(f"expected a PROXY protocol {_expected(mode)} header, got {_show(data)}")


def _expected(mode: str) -> str:
    return {"v1": "v1", "v2": "v2"}.get(mode, "v1 or v2")


def _show(data: bytes | bytearray) -> str:
    return repr(bytes(data[:32])) + ("..." if len(data) > 32 else "")


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | int:
    if bytes(data[:6]) != V1_PREFIX[: len(data)]:
        raise ProxyHeaderError(f"expected a PROXY protocol v1 header, got {_show(data)}")
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line without CRLF in its first {V1_MAX} bytes")
        protocol = bytes(data[6:]).split(b" ", 1)[0] if b" " in data[6:] else b""
        shortest = _V1_MIN.get(protocol, 15)
        return max(shortest - len(data), 1 if data.endswith(b"\r") else 2)
    if end == 0 or data[end - 1] != 0x0D:
        raise ProxyHeaderError("PROXY v1 line must end with CRLF")
    try:
        line = bytes(data[: end - 1]).decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError(f"PROXY v1 line is not ASCII: {_show(data[:end])}") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, "UNKNOWN", None, None, end + 1)  # (the rest of the line is ignored)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
    _, protocol, source, destination, source_port, destination_port = parts
    family = socket.AF_INET if protocol == "TCP4" else socket.AF_INET6
    for address in (source, destination):
        try:
            socket.inet_pton(family, address)
        except OSError:
            raise ProxyHeaderError(f"PROXY v1 line: {address!r} is not an {protocol} address") from None
    ports = []
    for port in (source_port, destination_port):
        # A decimal number without leading zero, 0..65535 (the specification, 2.1).
        if not port.isdigit() or not port.isascii() or (port[0] == "0" and port != "0") or int(port) > 65535:
            raise ProxyHeaderError(f"PROXY v1 line: {port!r} is not a port")
        ports.append(int(port))
    return ProxyHeader(1, protocol, (source, ports[0]), (destination, ports[1]), end + 1)


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | int:
    have = len(data)
    if not V2_SIGNATURE.startswith(bytes(data[:12])):
        raise ProxyHeaderError(f"expected a PROXY protocol v2 header, got {_show(data)}")
    if have < 16:
        return 16 - have
    version_command, family_transport, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command:#x}")
    total = 16 + length
    if total > V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes, more than {V2_MAX}")
    if have < total:
        return total - have
    if command == 0:  # LOCAL: the proxy's own connection (a health check): no addresses
        return ProxyHeader(2, "LOCAL", None, None, total)
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family == 0:  # UNSPEC: the proxy does not know; the socket's addresses hold
        return ProxyHeader(2, "PROXY", None, None, total)
    if family not in _V2_FAMILIES or transport != 1:
        raise ProxyHeaderError(f"PROXY v2 header with unsupported family/transport {family_transport:#04x}")
    kind, size = _V2_FAMILIES[family]
    if length < size:
        raise ProxyHeaderError(f"PROXY v2 address block of {length} bytes, {size} needed")
    block = bytes(data[16 : 16 + size])  # (what follows, up to ``length``, are TLVs: skipped)
    if kind == socket.AF_UNIX:
        # ASGI: a UNIX client has no (host, port); the server is (path, None).
        path = block[108:216].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        return ProxyHeader(2, "PROXY", None, (path, None), total)
    half = (size - 4) // 2
    source = socket.inet_ntop(kind, block[:half])
    destination = socket.inet_ntop(kind, block[half : 2 * half])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * half)
    return ProxyHeader(2, "PROXY", (source, source_port), (destination, destination_port), total)


# ---------------------------------------------------------------------- the asyncio side
_WARN_EVERY = 10.0  # seconds between two warnings of one kind (a scan must not flood the log)
_last_warning: dict[str, float] = {}


def _warn(kind: str, message: str, *args: Any) -> None:
    """A warning at most every _WARN_EVERY seconds per kind; debug lines in between."""
    now = time.monotonic()
    if now - _last_warning.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
        _last_warning[kind] = now
        error_logger.warning(message, *args)
    elif error_logger.isEnabledFor(logging.DEBUG):
        error_logger.debug(message, *args)


def _peer(transport: Any) -> tuple | None:
    peer = transport.get_extra_info("peername")
    return tuple(peer[:2]) if isinstance(peer, tuple) else None


class ProxyHeaderReader(asyncio.BufferedProtocol):
    """The first protocol of every connection under --proxy-protocol (see the module docstring).

    It is a BufferedProtocol so that it decides how much each read may take: with TLS, only
    bytes known to be the header's; without, a whole buffer (the rest goes to HTTP/1.1). It is
    in ``settings.connections`` until the hand-over, so the once-a-second sweep times it out
    and shutdown closes it.
    """

    __slots__ = ("settings", "mode", "ssl_context", "transport", "client", "data", "chunk", "need",
                 "started", "idle_since", "done", "early", "early_eof", "lost", "handshake")

    def __init__(self, settings: Any, mode: str, ssl_context: Any = None) -> None:
        self.settings = settings
        self.mode = mode
        self.ssl_context = ssl_context
        self.transport: Any = None
        self.client: tuple | None = None
        self.data = bytearray()  # the header so far
        self.chunk = bytearray()
        self.need = 15 if mode != "v2" else 16
        self.started = 0.0  # for --timeout-request-header, started by the sweep
        self.idle_since = 0.0  # (never idle: the sweep calls check_timeouts)
        self.done = False  # the header is read
        self.early: bytearray | None = None  # TLS: bytes decrypted before HTTP/1.1 takes over
        self.early_eof = False
        self.lost = False
        self.handshake: asyncio.Task | None = None  # (a reference, so that the task is not collected)

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client = _peer(transport)
        host = self.client[0] if self.client else ""
        if not trusted_proxy(host, self.settings):
            # A listener that expects PROXY headers serves the proxy alone: anyone else could
            # only bypass it (see README, "PROXY protocol").
            _warn("untrusted", "PROXY protocol: connection from %s refused: not in --forwarded-allow-ips",
                  _describe(self.client))
            transport.close()
            self.lost = True
            return
        self.settings.connections.add(self)

    def get_buffer(self, sizehint: int) -> Any:
        if self.done:  # TLS is up, HTTP/1.1 not yet attached: keep what arrives (see _start_tls)
            self.chunk = bytearray(max(sizehint, 16384) if sizehint > 0 else 65536)
        else:
            self.chunk = bytearray(self.need if self.ssl_context is not None else max(self.need, 16384))
        return self.chunk

    def buffer_updated(self, nbytes: int) -> None:
        received = memoryview(self.chunk)[:nbytes]
        if self.done:
            if self.early is not None:
                self.early += received
            return
        self.data += received
        try:
            result = parse_proxy_header(self.data, self.mode)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if isinstance(result, int):
            self.need = result
            return
        self.done = True
        addresses = (result.server, result.client) if result.has_addresses else None
        rest = bytes(self.data[result.length :])
        self.data = bytearray()
        if error_logger.isEnabledFor(logging.DEBUG):
            error_logger.debug("PROXY header from %s: %r", _describe(self.client), result)
        if self.ssl_context is None:
            self._hand_over(self.transport, addresses, rest)
        else:
            self.transport.pause_reading()  # (start_tls takes over the reading)
            self.handshake = self.settings.loop.create_task(self._start_tls(addresses))

    def eof_received(self) -> bool | None:
        if self.done:
            self.early_eof = True  # (the TLS peer closed before HTTP/1.1 was attached)
            return True
        if self.data:
            _warn("malformed", "PROXY protocol: %s closed the connection in the middle of the header %s",
                  _describe(self.client), _show(self.data))
        elif error_logger.isEnabledFor(logging.DEBUG):
            error_logger.debug("PROXY protocol: %s closed the connection before sending a byte", _describe(self.client))
        self._forget()
        return None  # (the transport closes)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    # ------------------------------------------------------------------ the sweep, shutdown
    def check_timeouts(self, now: float) -> None:
        if self.done:
            return  # (the TLS handshake that follows has its own timeout)
        timeout = self.settings.timeout_request_header
        if not self.started:
            self.started = now
        elif timeout and now - self.started > timeout:
            _warn("timeout", "PROXY protocol: no complete header from %s within %ss: closed",
                  _describe(self.client), timeout)
            self._forget()
            self.transport.abort()

    def close_idle(self) -> None:
        self._forget()
        self.transport.close()

    # ------------------------------------------------------------------ the hand-over
    def _refuse(self, reason: str) -> None:
        _warn("malformed", "PROXY protocol: connection from %s closed: %s", _describe(self.client), reason)
        self._forget()
        self.transport.abort()  # (nothing is sent: the peer is not speaking our protocol)

    def _forget(self) -> None:
        self.lost = True
        self.settings.connections.discard(self)

    async def _start_tls(self, addresses: tuple | None) -> None:
        """TLS after the header: this object stays the protocol until the handshake is done
        (asyncio may deliver the first decrypted bytes before start_tls returns: kept in
        ``early``), then HTTP/1.1 (or HTTP/2, by ALPN) takes the TLS transport."""
        self.early = bytearray()
        try:
            transport = await self.settings.loop.start_tls(self.transport, self, self.ssl_context, server_side=True)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:  # (ssl.SSLError is an OSError)
            if error_logger.isEnabledFor(logging.DEBUG):
                error_logger.debug("TLS handshake with %s (after its PROXY header) failed: %r", _describe(self.client), exc)
            self._forget()
            self.transport.abort()
            return
        if self.lost or transport is None or transport.is_closing():
            return
        early, self.early = bytes(self.early), None
        self._hand_over(transport, addresses, early)
        if self.early_eof and not transport.is_closing():
            if not transport.get_protocol().eof_received():
                transport.close()

    def _hand_over(self, transport: Any, addresses: tuple | None, data: bytes) -> None:
        self.settings.connections.discard(self)
        protocol = switch.new_connection(self.settings)
        transport.set_protocol(protocol)
        protocol.connection_made(transport, addresses)
        if data:
            transport.get_protocol().data_received(data)  # (HTTP/2 if connection_made switched to it)


def _describe(address: tuple | None) -> str:
    if not address:
        return "a UNIX socket peer"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
