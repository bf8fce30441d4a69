"""Acceptance: --proxy-protocol behind a real HAProxy (``send-proxy``, ``send-proxy-v2``).

HAProxy on 127.0.0.1 (and ::1) in front of an in-process Tether. The client connects from
127.0.0.2 (loopback has all of 127/8), so the address Tether's socket sees (HAProxy's,
127.0.0.1) and the one the header carries differ; only the header can put 127.0.0.2 and the
client's own port into the scope and the access log. HAProxy's health checks travel with the
header too (v2: the LOCAL command, which keeps the socket's addresses).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from tests.support.asgi import respond_with_addresses
from tests.support.logs import messages
from tests.support.server import serve
from tests.support.waiting import wait_until
from tests.support.components import run_haproxy

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(60)


class Seen:
    def __init__(self) -> None:
        self.scopes: list[dict] = []


def who_app(seen: Seen) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.scopes.append(scope)
        await respond_with_addresses(scope, send)

    return app


@pytest.fixture
def logs(tether_logs: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    return tether_logs  # (conftest.py: tether.error at DEBUG and tether.access in caplog)


def get(port: int, path: str = "/who", source: str = "127.0.0.2", host: str = "127.0.0.1") -> tuple[bytes, tuple]:
    """GET through HAProxy from ``source``; (the raw response, the client's own address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data, sock.getsockname()[:2]


def answer(data: bytes) -> Any:
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    return json.loads(data.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("send_proxy, mode", [("send-proxy", "v1"), ("send-proxy-v2", "v2"), ("send-proxy-v2", "auto")])
def test_haproxy_send_proxy_gives_tether_the_client_address(send_proxy: str, mode: str, logs: Any) -> None:
    seen = Seen()
    with serve(who_app(seen), proxy_protocol=mode, lifespan="off") as srv, \
            run_haproxy(srv.port, f"{send_proxy} check inter 300ms", "    option httpchk GET /health") as (port, tmp):
        data, client = get(port)
        body = answer(data)
        assert body["client"] == ["127.0.0.2", client[1]], "the scope's client is not the one HAProxy received"
        assert body["server"] == ["127.0.0.1", port], "the scope's server is not HAProxy's frontend"
        assert body["scheme"] == "http"
        wait_until(lambda: any('"GET /who HTTP/1.1" 200' in line for line in messages(logs, "tether.access")),
                   what="the access log line")
        line = next(line for line in messages(logs, "tether.access") if "/who" in line)
        assert line.startswith(f"127.0.0.2:{client[1]} - "), line
        # HAProxy's health checks carry a header too: the server is up, and (v2) the check's
        # LOCAL header keeps the socket's addresses: HAProxy's own.
        wait_until(lambda: any(s["path"] == "/health" for s in seen.scopes), what="a health check")
        check = next(s for s in seen.scopes if s["path"] == "/health")
        if send_proxy == "send-proxy-v2":
            assert check["client"][0] == "127.0.0.1" and check["server"] == ("127.0.0.1", srv.port), check["client"]
        time.sleep(0.7)  # (two more checks)
        assert "is DOWN" not in (tmp / "haproxy.log").read_text(), "HAProxy's health checks failed"


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_over_ipv6(send_proxy: str) -> None:
    seen = Seen()
    with serve(who_app(seen), proxy_protocol="auto", lifespan="off") as srv, \
            run_haproxy(srv.port, send_proxy, host="::1") as (port, _):
        data, client = get(port, source="::1", host="::1")
        body = answer(data)
        assert body["client"] == ["::1", client[1]] and body["server"] == ["::1", port]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: Any) -> str:
    directory = tmp_path_factory.mktemp("haproxy-certs")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    return str(directory / "server.pem")


@pytest.mark.parametrize("alpn, version", [("http/1.1", "1.1"), ("h2", "2")])
def test_tls_behind_send_proxy_v2(alpn: str, version: str, certs: str) -> None:
    """HAProxy writes the header, then starts TLS to Tether (``ssl``), HTTP/2 or 1.1 by ALPN."""
    seen = Seen()
    with serve(who_app(seen), proxy_protocol="v2", ssl_certfile=certs, lifespan="off") as srv, \
            run_haproxy(srv.port, f"send-proxy-v2 ssl verify none alpn {alpn}") as (port, _):
        for _ in range(2):
            data, client = get(port)
            body = answer(data)
            assert body == {"client": ["127.0.0.2", client[1]], "server": ["127.0.0.1", port], "scheme": "https",
                            "http_version": version}


def test_haproxy_without_send_proxy_is_refused(logs: Any) -> None:
    seen = Seen()
    with serve(who_app(seen), proxy_protocol="auto", lifespan="off") as srv, run_haproxy(srv.port) as (port, _):
        data, _ = get(port)
        assert data.startswith(b"HTTP/1.1 502") or data.startswith(b"HTTP/1.1 503"), data[:200]
    assert not seen.scopes, "the app was called without a PROXY header"
    assert any("expected a PROXY protocol v1 or v2 header, got b'GET /who HTTP/1.1" in line
               for line in messages(logs, "tether.error"))


def test_haproxy_not_in_forwarded_allow_ips_is_refused(logs: Any) -> None:
    seen = Seen()
    with serve(who_app(seen), proxy_protocol="auto", forwarded_allow_ips="192.0.2.0/24", lifespan="off") as srv, \
            run_haproxy(srv.port, "send-proxy-v2") as (port, _):
        data, _ = get(port)
        assert data.startswith(b"HTTP/1.1 502") or data.startswith(b"HTTP/1.1 503"), data[:200]
        time.sleep(0.1)
    assert not seen.scopes
    assert any("refused: not in --forwarded-allow-ips" in line for line in messages(logs, "tether.error"))
