"""HTTPS for real: certificates from trustme, Tether as a subprocess, httpx / ssl / curl clients."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from tests.support.process import assert_one_error_line, run_cli, running
from tests.support.waiting import free_port

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(60)


def https(port: int) -> str:
    return f"https://127.0.0.1:{port}"


def test_https_with_trusted_ca(certs):
    with running("edge_apps:info", *certs.server_args()) as srv:
        assert f"https://127.0.0.1:{srv.port}" in srv.output()
        response = httpx.get(https(srv.port) + "/secure?x=1", verify=certs.client_context(), timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert body["scheme"] == "https"
        assert body["path"] == "/secure" and body["query_string"] == "x=1"
        # Keep-alive over TLS: several requests on one connection.
        with httpx.Client(verify=certs.client_context(), timeout=5) as client:
            assert [client.get(https(srv.port)).status_code for _ in range(5)] == [200] * 5
        # An untrusting client refuses the certificate.
        with pytest.raises(httpx.ConnectError):
            httpx.get(https(srv.port), verify=ssl.create_default_context(), timeout=5)
        # Plain HTTP to the TLS port gets no HTTP response.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            assert not data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("mode, offered, chosen", [
    ("1", ["h2", "http/1.1"], "http/1.1"),
    ("auto", ["http/1.1"], "http/1.1"),
])
def test_alpn_http11(certs, mode, offered, chosen):
    with running("simple_apps:hello", *certs.server_args(), "--http", mode) as srv:
        context = certs.client_context()
        context.set_alpn_protocols(offered)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.selected_alpn_protocol() == chosen
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello, world")


def test_encrypted_key_with_password(certs):
    args = [*certs.server_args(certs.encrypted_key_file), "--ssl-keyfile-password", "correct horse"]
    with running("simple_apps:hello", *args) as srv:
        assert httpx.get(https(srv.port), verify=certs.client_context(), timeout=5).text == "hello, world"


def test_encrypted_key_wrong_password_is_one_line(certs):
    args = [*certs.server_args(certs.encrypted_key_file), "--ssl-keyfile-password", "wrong", "--port", str(free_port())]
    assert_one_error_line(run_cli("simple_apps:hello", *args), "TLS setup failed")


def test_client_certificate_required(certs):
    args = [*certs.server_args(), "--ssl-ca-certs", str(certs.ca_file), "--ssl-cert-reqs", "required"]
    with running("simple_apps:hello", *args) as srv:
        # With a client certificate signed by the CA: served.
        response = httpx.get(https(srv.port), verify=certs.client_context(with_client_cert=True), timeout=5)
        assert response.text == "hello, world"
        # Without one: no response. (In TLS 1.3 the server checks the client's certificate after
        # the client considers the handshake done, so the failure may come on the first read.)
        with pytest.raises(httpx.HTTPError):
            httpx.get(https(srv.port) + "/no-cert-tls13", verify=certs.client_context(), timeout=5)
        # TLS 1.2: the handshake itself fails.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            context = certs.client_context(max_version=ssl.TLSVersion.TLSv1_2)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /no-cert-tls12 HTTP/1.1\r\nHost: x\r\n\r\n")
                    tls.recv(4096)
        time.sleep(0.2)
        out = srv.output()
        assert "no-cert" not in out, out  # neither request without a certificate reached the app


def test_client_certificate_optional(certs):
    args = [*certs.server_args(), "--ssl-ca-certs", str(certs.ca_file), "--ssl-cert-reqs", "optional"]
    with running("simple_apps:hello", *args) as srv:
        assert httpx.get(https(srv.port), verify=certs.client_context(), timeout=5).text == "hello, world"
        assert httpx.get(https(srv.port), verify=certs.client_context(True), timeout=5).text == "hello, world"


def tls12_cipher(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            return tls.cipher()[0]


def test_ssl_ciphers(certs):
    chosen = "ECDHE-ECDSA-AES256-GCM-SHA384"
    with running("simple_apps:hello", *certs.server_args(), "--ssl-ciphers", chosen) as srv:
        context = certs.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(chosen)
        assert tls12_cipher(srv.port, context) == chosen
        # A client that offers only another cipher cannot connect.
        other = certs.client_context(max_version=ssl.TLSVersion.TLSv1_2)
        other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls12_cipher(srv.port, other)
    # With the default cipher list, that other client is served.
    with running("simple_apps:hello", *certs.server_args()) as srv:
        assert tls12_cipher(srv.port, other) == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_bad_cipher_list_is_one_line(certs):
    args = [*certs.server_args(), "--ssl-ciphers", "NO-SUCH-CIPHER", "--port", str(free_port())]
    assert_one_error_line(run_cli("simple_apps:hello", *args), "TLS setup failed")


def test_curl_with_cacert(certs):
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl not installed")
    with running("edge_apps:info", *certs.server_args()) as srv:
        for host in ("127.0.0.1", "localhost"):
            result = subprocess.run(
                [curl, "-sS", "--max-time", "10", "--cacert", str(certs.ca_file), f"https://{host}:{srv.port}/curl"],
                capture_output=True, text=True, timeout=20,
            )
            if host == "localhost" and result.returncode == 7:
                continue  # localhost resolved to ::1 first and Tether listens on 127.0.0.1 only
            assert result.returncode == 0, result.stderr
            body = json.loads(result.stdout)
            assert body["scheme"] == "https" and body["path"] == "/curl"
        # Without the CA, curl refuses the certificate.
        result = subprocess.run([curl, "-sS", "--max-time", "10", f"https://127.0.0.1:{srv.port}/"],
                                capture_output=True, text=True, timeout=20)
        assert result.returncode == 60, (result.returncode, result.stderr)


def test_https_with_workers(certs):
    with running("edge_apps:info", *certs.server_args(), "--workers", "2", ready=2) as srv:
        pids = set()
        for _ in range(40):
            response = httpx.get(https(srv.port) + "/block?ms=5", verify=certs.client_context(), timeout=5)
            assert response.json()["scheme"] == "https"
            pids.add(response.json()["pid"])
            if len(pids) == 2:
                break
        assert pids == set(srv.worker_pids())


# Regression: a final send() still draining when the client closed was logged as an app error.
def test_tls_completed_responses_log_no_error(certs):
    with running("simple_apps:hello", *certs.server_args(), "--loop", "uvloop") as srv:
        for _ in range(150):
            response = httpx.get(https(srv.port), verify=certs.client_context(), timeout=5)
            assert response.text == "hello, world"
        time.sleep(0.3)
        out = srv.output()
        assert "Exception in ASGI application" not in out, out[-3000:]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_streamed_response_over_tls_is_not_held_back(certs, loop):
    """A response sent in many send() calls to a client that only reads: the TLS transport must
    not leave send() paused (a high-water mark of 0 made it wait for the client's next bytes)."""
    from tests.support.server import serve

    chunk = bytes(range(256)) * 64  # 16 KiB

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        for _ in range(200):  # 3.2 MiB
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve(app, loop=loop, ssl_certfile=str(certs.cert_file), ssl_keyfile=str(certs.key_file)) as srv:
        response = httpx.get(srv.url + "/", verify=certs.client_context(), timeout=10)
        assert response.status_code == 200 and response.content == chunk * 200
