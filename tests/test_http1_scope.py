"""The HTTP connection scope Tether builds for HTTP/1.x requests: every key, root_path,
lifespan state, extensions, and --proxy-headers / --forwarded-allow-ips.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.asgi import read_body, respond
from tests.support.http1 import TIMEOUT, RawClient, request
from tests.support.server import serve, server_idle

from tether.cycle import DisconnectSignal


class ScopeRecorder:
    """Keeps a copy of each http scope (and the message receive() gave first)."""

    def __init__(self) -> None:
        self.scopes: list[dict] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    scope["state"]["shared"] = {"n": 1}
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        copy = dict(scope)
        copy["extensions"] = dict(scope["extensions"])
        copy["state"] = dict(scope["state"])  # as the app received it
        copy["state_object"] = scope["state"]
        copy["body"] = await read_body(receive)
        self.scopes.append(copy)
        scope["state"]["set_by_request"] = True  # must not leak into the next request's state
        await respond(send, b"recorded")

    @property
    def last(self) -> dict:
        return self.scopes[-1]


@pytest.fixture
def recorder() -> ScopeRecorder:
    return ScopeRecorder()


def test_full_http_scope(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(
                b"POST /caf%C3%A9/a%20b/%2F?x=1&y=%20z&x=2 HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\n"
                b"X-Dup: first\r\n"
                b"Content-Type: Text/Plain\r\n"
                b"x-dup: Second Value\r\n"
                b"Content-Length: 3\r\n"
                b"\r\nabc"
            )
            assert client.read_response().body == b"recorded"
            local = client.sock.getsockname()
        scope = recorder.last
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
        assert scope["http_version"] == "1.1"
        assert scope["method"] == "POST"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/café/a b//"
        assert isinstance(scope["raw_path"], bytes)
        assert scope["raw_path"] == b"/caf%C3%A9/a%20b/%2F"
        assert scope["query_string"] == b"x=1&y=%20z&x=2"
        assert scope["root_path"] == ""
        assert scope["headers"] == [
            (b"host", b"127.0.0.1"),
            (b"x-dup", b"first"),
            (b"content-type", b"Text/Plain"),
            (b"x-dup", b"Second Value"),
            (b"content-length", b"3"),
        ]
        assert all(type(n) is bytes and type(v) is bytes for n, v in scope["headers"])
        assert scope["client"] == (local[0], local[1])
        assert isinstance(scope["client"], tuple) and isinstance(scope["server"], tuple)
        assert scope["server"] == ("127.0.0.1", srv.port)
        assert scope["body"] == b"abc"
        extensions = scope["extensions"]
        assert "http.response.trailers" in extensions
        assert "http.response.pathsend" in extensions
        assert isinstance(extensions["tether.disconnect"], DisconnectSignal)
        assert scope["state"] == {}


def test_scope_varies_with_the_request(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("GET", "/plain", version="1.0", headers=[("Connection", "keep-alive")]))
            client.read_response()
            scope = recorder.last
            assert scope["http_version"] == "1.0"
            assert scope["method"] == "GET"
            assert scope["path"] == "/plain" and scope["query_string"] == b""
            assert "http.response.trailers" not in scope["extensions"]  # no trailers in HTTP/1.0
            assert "tether.disconnect" in scope["extensions"]

            client.send(request("PUT", "/q?", headers=[("Content-Length", "0")]))
            client.read_response()
            assert recorder.last["method"] == "PUT"
            assert recorder.last["query_string"] == b"" and recorder.last["path"] == "/q"

            # Absolute-form target (as sent to proxies).
            client.send(b"GET http://example.com:8080/abs/p%41th?k=v HTTP/1.1\r\nHost: example.com\r\n\r\n")
            client.read_response()
            assert recorder.last["path"] == "/abs/pAth"
            assert recorder.last["raw_path"] == b"/abs/p%41th"
            assert recorder.last["query_string"] == b"k=v"

            client.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
            client.read_response()
            assert recorder.last["method"] == "OPTIONS" and recorder.last["path"] == "*"

            # Non-UTF-8 percent-escapes do not break the request.
            client.send(request("GET", "/bad%FFbyte"))
            assert client.read_response().status == 200
            assert recorder.last["raw_path"] == b"/bad%FFbyte"
            assert recorder.last["path"].startswith("/bad") and recorder.last["path"].endswith("byte")
        # Each request gets its own scope; httpx sees the same thing.
        httpx.delete(srv.url + "/via/httpx?z=%2B", timeout=TIMEOUT)
        assert recorder.last["method"] == "DELETE"
        assert recorder.last["path"] == "/via/httpx" and recorder.last["query_string"] == b"z=%2B"


def test_root_path_is_prepended_to_path(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off", root_path="/api/v1") as srv:
        httpx.get(srv.url + "/items/caf%C3%A9?q=1", timeout=TIMEOUT)
        scope = recorder.last
        assert scope["root_path"] == "/api/v1"
        assert scope["path"] == "/api/v1/items/café"
        assert scope["raw_path"] == b"/items/caf%C3%A9"  # what came over the wire
        assert scope["query_string"] == b"q=1"


def test_state_is_a_copy_of_the_lifespan_state(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="on") as srv:
        for _ in range(2):
            assert httpx.get(srv.url, timeout=TIMEOUT).text == "recorded"
        server_idle(srv)
    first, second = recorder.scopes
    assert first["state"]["db"] == "connected"
    assert second["state"] == {"db": "connected", "shared": {"n": 1}}  # no "set_by_request" leak
    assert first["state_object"] is not second["state_object"]
    assert first["state"]["shared"] is second["state"]["shared"]  # a shallow copy, as the spec says


# ---------------------------------------------------------------------- proxy headers
FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_proxy_headers_from_a_trusted_proxy_are_applied(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off") as srv:
        httpx.get(srv.url, headers=FORWARDED, timeout=TIMEOUT)
        assert recorder.last["client"] == ("203.0.113.7", 0)
        assert recorder.last["scheme"] == "https"
        # Several hops: the rightmost address that is not a trusted proxy is the client.
        httpx.get(srv.url, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 127.0.0.1"}, timeout=TIMEOUT)
        assert recorder.last["client"] == ("203.0.113.9", 0)
        assert recorder.last["scheme"] == "http"
        # Only the proto.
        with RawClient.to(srv) as client:
            client.send(request(headers=[("X-Forwarded-Proto", "HTTPS")]))
            client.read_response()
            assert recorder.last["scheme"] == "https"
            assert recorder.last["client"] == client.sock.getsockname()[:2]
            # The headers are per request: the next one on the same connection is plain.
            client.send(request())
            client.read_response()
            assert recorder.last["scheme"] == "http"
            assert recorder.last["client"] == client.sock.getsockname()[:2]
        # The scheme of an http scope is http or https, whatever word the proxy used.
        httpx.get(srv.url, headers={"X-Forwarded-Proto": "wss"}, timeout=TIMEOUT)
        assert recorder.last["scheme"] == "https"
        httpx.get(srv.url, headers={"X-Forwarded-Proto": "ws"}, timeout=TIMEOUT)
        assert recorder.last["scheme"] == "http"
        # An unknown proto is ignored.
        httpx.get(srv.url, headers={"X-Forwarded-Proto": "gopher"}, timeout=TIMEOUT)
        assert recorder.last["scheme"] == "http"


def test_proxy_headers_from_an_untrusted_peer_are_ignored(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off", forwarded_allow_ips="10.0.0.1") as srv:
        response = httpx.get(srv.url, headers=FORWARDED, timeout=TIMEOUT)
        assert response.status_code == 200
        assert recorder.last["client"][0] == "127.0.0.1" and recorder.last["client"][1] != 0
        assert recorder.last["scheme"] == "http"
        # The headers themselves still reach the app.
        assert (b"x-forwarded-for", b"203.0.113.7") in recorder.last["headers"]


def test_proxy_headers_disabled(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off", proxy_headers=False) as srv:
        httpx.get(srv.url, headers=FORWARDED, timeout=TIMEOUT)
        assert recorder.last["client"][0] == "127.0.0.1"
        assert recorder.last["scheme"] == "http"


def test_forwarded_allow_ips_star_and_networks(recorder: ScopeRecorder) -> None:
    with serve(recorder, lifespan="off", forwarded_allow_ips="*") as srv:
        httpx.get(srv.url, headers=FORWARDED, timeout=TIMEOUT)
        assert recorder.last["client"] == ("203.0.113.7", 0) and recorder.last["scheme"] == "https"
    with serve(recorder, lifespan="off", forwarded_allow_ips="10.0.0.0/8, 127.0.0.0/8") as srv:
        httpx.get(srv.url, headers={"X-Forwarded-For": "192.0.2.5, 10.1.2.3"}, timeout=TIMEOUT)
        assert recorder.last["client"] == ("192.0.2.5", 0)
