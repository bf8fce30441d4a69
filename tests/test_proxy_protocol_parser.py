"""The PROXY protocol header parser, sans-I/O: byte strings in, a header / "need n more" / an error out.

Every valid header is also fed the way the TLS reader reads it (never more than the parser says
it still needs), to show that such a reader stops exactly at the header's end.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tether.server.proxy_protocol import V1_MAX, V2_MAX, V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse_proxy_header

pytestmark = pytest.mark.timeout(10)


def v2(command: int = 1, family: int = 0x11, body: bytes = b"", version: int = 2, length: int | None = None) -> bytes:
    return V2_SIGNATURE + bytes(((version << 4) | command, family)) + struct.pack("!H", len(body) if length is None else length) + body


def v2_inet(client: tuple, server: tuple, tlvs: bytes = b"") -> bytes:
    ipv6 = ":" in client[0]
    kind = socket.AF_INET6 if ipv6 else socket.AF_INET
    body = socket.inet_pton(kind, client[0]) + socket.inet_pton(kind, server[0]) + struct.pack("!HH", client[1], server[1])
    return v2(family=0x21 if ipv6 else 0x11, body=body + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind,)) + struct.pack("!H", len(value)) + value


def read_exactly_as_needed(data: bytes, mode: str = "auto") -> ProxyHeader:
    """Feed ``data`` in the sizes the parser asks for; assert it never asks past the header."""
    have = b""
    for _ in range(len(data) + 1):
        result = parse_proxy_header(have, mode)
        if isinstance(result, ProxyHeader):
            assert result.length == len(have), "the header ended before the bytes read"
            return result
        assert result >= 1
        assert len(have) + result <= len(data), f"asked for {result} more bytes after {len(have)}: past the header"
        have = data[: len(have) + result]
    raise AssertionError("no header after all bytes")


# ---------------------------------------------------------------------- v1
V1_CASES = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443)),
    (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "TCP4", ("0.0.0.0", 0), ("0.0.0.0", 0)),
    (b"PROXY TCP6 2001:db8::1 ::1 65535 8000\r\n", "TCP6", ("2001:db8::1", 65535), ("::1", 8000)),
    (b"PROXY TCP6 :: :: 0 0\r\n", "TCP6", ("::", 0), ("::", 0)),
    (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
     "TCP6", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
]


@pytest.mark.parametrize("line, protocol, client, server", V1_CASES)
def test_v1_tcp(line: bytes, protocol: str, client: tuple, server: tuple) -> None:
    for mode in ("v1", "auto"):
        header = parse_proxy_header(line + b"GET / HTTP/1.1\r\n", mode)
        assert isinstance(header, ProxyHeader)
        assert (header.version, header.command, header.client, header.server) == (1, protocol, client, server)
        assert header.length == len(line) and header.has_addresses
        assert read_exactly_as_needed(line, mode).length == len(line)


def test_the_longest_v1_line_is_107_bytes() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()  # the specification's worst case
    assert len(longest) == V1_MAX == 107
    assert parse_proxy_header(longest).length == 107
    assert parse_proxy_header(longest[:-2]) == 2 and parse_proxy_header(longest[:-1]) == 1
    with pytest.raises(ProxyHeaderError, match="107"):
        parse_proxy_header(longest[:-2] + b" \r\n")  # 108 bytes
    with pytest.raises(ProxyHeaderError, match="107"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 100)  # no CRLF in the first 107 bytes


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", b"PROXY UNKNOWN whatever\r\n"])
def test_v1_unknown_keeps_the_socket_addresses(line: bytes) -> None:
    header = parse_proxy_header(line + b"rest")
    assert header.command == "UNKNOWN" and header.client is None and header.server is None
    assert not header.has_addresses and header.length == len(line)
    assert read_exactly_as_needed(line).length == len(line)


@pytest.mark.parametrize("prefix", [b"P", b"PROXY", b"PROXY ", b"PROXY TCP4 1.2.3.4", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"])
def test_v1_prefix_needs_more(prefix: bytes) -> None:
    need = parse_proxy_header(prefix)
    assert isinstance(need, int) and need >= 1
    if prefix.endswith(b"\r"):
        assert need == 1


@pytest.mark.parametrize("data, message", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "expected a PROXY protocol v1 or v2 header"),
    (b"PROXX TCP4", "expected a PROXY protocol v1"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "expected"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "not an TCP4 address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not an TCP4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an TCP6 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa3\r\n", "not ASCII"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "not a port"),
])
def test_v1_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse_proxy_header(data)


def test_modes_refuse_the_other_version() -> None:
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    binary = v2_inet(("1.2.3.4", 1), ("5.6.7.8", 2))
    with pytest.raises(ProxyHeaderError, match="expected a PROXY protocol v2 header"):
        parse_proxy_header(line, "v2")
    with pytest.raises(ProxyHeaderError, match="expected a PROXY protocol v1 header"):
        parse_proxy_header(binary, "v1")
    assert parse_proxy_header(line, "v1").version == 1
    assert parse_proxy_header(binary, "v2").version == 2
    assert parse_proxy_header(b"", "v2") == 16 and parse_proxy_header(b"", "v1") == 15


# ---------------------------------------------------------------------- v2
def test_v2_tcp4() -> None:
    data = v2_inet(("192.0.2.1", 56324), ("198.51.100.2", 443))
    header = parse_proxy_header(data + b"\x16\x03\x01")  # (what follows: a TLS ClientHello)
    assert (header.version, header.command, header.client, header.server) == (2, "PROXY", ("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert header.length == 16 + 12 == len(data)
    assert read_exactly_as_needed(data).length == len(data)
    assert read_exactly_as_needed(data, "v2").length == len(data)


def test_v2_tcp6() -> None:
    data = v2_inet(("2001:db8::7", 40000), ("::1", 8443))
    header = parse_proxy_header(data)
    assert (header.client, header.server, header.length) == (("2001:db8::7", 40000), ("::1", 8443), 16 + 36)


def test_v2_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.org") + tlv(0x05, b"unique-id") + tlv(0x20, b"\x01" + b"\0" * 4 + tlv(0x21, b"TLSv1.3"))
    data = v2_inet(("10.0.0.1", 1234), ("10.0.0.2", 80), tlvs)
    header = parse_proxy_header(data + b"GET")
    assert header.client == ("10.0.0.1", 1234) and header.length == len(data)
    assert read_exactly_as_needed(data).length == len(data)


def test_v2_local_keeps_the_socket_addresses() -> None:
    data = v2(command=0, family=0x11, body=b"\x7f\0\0\x01" * 2 + b"\0\x01\0\x02")  # (addresses of a LOCAL are ignored)
    header = parse_proxy_header(data)
    assert header.command == "LOCAL" and not header.has_addresses and header.length == len(data)
    empty = v2(command=0, family=0x00)
    assert parse_proxy_header(empty).length == 16 and not parse_proxy_header(empty).has_addresses


def test_v2_unspec_keeps_the_socket_addresses() -> None:
    header = parse_proxy_header(v2(command=1, family=0x00, body=tlv(0x04, b"")))
    assert header.command == "PROXY" and not header.has_addresses


def test_v2_unix() -> None:
    source, destination = b"/run/client.sock".ljust(108, b"\0"), b"/run/haproxy.sock".ljust(108, b"\0")
    header = parse_proxy_header(v2(family=0x31, body=source + destination))
    assert header.client is None and header.server == ("/run/haproxy.sock", None) and header.length == 16 + 216


def test_v2_length_is_bounded() -> None:
    largest = v2_inet(("1.2.3.4", 1), ("5.6.7.8", 2), tlv(0xE0, b"x" * (V2_MAX - 16 - 12 - 3)))
    assert len(largest) == V2_MAX and parse_proxy_header(largest).length == V2_MAX
    with pytest.raises(ProxyHeaderError, match="more than 4096"):
        parse_proxy_header(v2(length=V2_MAX - 16 + 1))  # refused from the first 16 bytes, before the body
    with pytest.raises(ProxyHeaderError, match="more than 4096"):
        parse_proxy_header(v2(length=65535))


@pytest.mark.parametrize("data, message", [
    (V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c", "expected a PROXY protocol v2"),
    (v2(version=1, body=b"\0" * 12), "version 1"),
    (v2(version=3, body=b"\0" * 12), "version 3"),
    (v2(command=2, body=b"\0" * 12), "unknown command 0x2"),
    (v2(command=0xF, body=b"\0" * 12), "unknown command 0xf"),
    (v2(family=0x12, body=b"\0" * 12), "unsupported family/transport 0x12"),  # UDP over IPv4
    (v2(family=0x10, body=b"\0" * 12), "unsupported family/transport 0x10"),
    (v2(family=0x41, body=b"\0" * 12), "unsupported family/transport 0x41"),
    (v2(family=0x11, body=b"\0" * 8), "8 bytes, 12 needed"),
    (v2(family=0x21, body=b"\0" * 12), "12 bytes, 36 needed"),
    (v2(family=0x31, body=b"\0" * 100), "100 bytes, 216 needed"),
])
def test_v2_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse_proxy_header(data)


@pytest.mark.parametrize("cut", range(1, 16))
def test_v2_prefix_needs_more(cut: int) -> None:
    data = v2_inet(("1.2.3.4", 1), ("5.6.7.8", 2))
    assert parse_proxy_header(data[:cut]) == 16 - cut
    assert parse_proxy_header(data[:16 + 5]) == 12 - 5


def test_a_tls_client_hello_is_not_a_header() -> None:
    with pytest.raises(ProxyHeaderError, match=r"got b'\\x16\\x03\\x01"):
        parse_proxy_header(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
