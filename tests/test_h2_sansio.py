"""HTTP/2's sans-I/O pieces (protocols/http2.py), without a socket or a loop: the response
header list built from the app's headers, and the request scope built from a stream's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tether.protocols.http2 import _without_hop_headers, request_scope, response_headers

DEFAULTS = [(b"server", b"tether")]


def test_response_headers_lower_cased_checked_and_completed() -> None:
    headers = response_headers(200, [(b"Content-Type", b"text/plain"), (b"X-A", b"1")], DEFAULTS, body_length=5)
    assert headers == [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-a", b"1"),
                       (b"content-length", b"5"), (b"server", b"tether")]


def test_response_headers_drop_connection_specific_fields_and_keep_an_app_length() -> None:
    app = [(b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"5"), (b"Upgrade", b"x"),
           (b"Content-Length", b"3")]
    assert response_headers(200, app, [], body_length=3) == [(b":status", b"200"), (b"content-length", b"3")]


@pytest.mark.parametrize("status", [204, 304, 101])
def test_no_length_is_added_for_bodyless_statuses(status: int) -> None:
    assert response_headers(status, [], [], body_length=0) == [(b":status", b"%d" % status)]


@pytest.mark.parametrize("bad", [[(b"x\r\ny", b"1")], [(b"x", b"1\x00")], [(b":path", b"/")], [(b"content-length", b"abc")]])
def test_response_headers_refuse_what_could_split_or_forge(bad: list) -> None:
    with pytest.raises(RuntimeError):
        response_headers(200, bad, [])


def test_the_same_header_list_is_checked_once_and_served_again() -> None:
    app = ((b"content-type", b"text/plain"),)
    first = response_headers(200, app, DEFAULTS, 1)
    assert response_headers(200, app, DEFAULTS, 1) == first
    assert response_headers(404, app, [], None) == [(b":status", b"404"), (b"content-type", b"text/plain")]


SETTINGS = SimpleNamespace(root_path="", lifespan_state={}, proxy_headers=False)


def test_request_scope() -> None:
    scope = request_scope([(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a%20b?q=1"),
                           (b":authority", b"example.com"), (b"x-a", b"1")], SETTINGS, ("127.0.0.1", 8000),
                          ("127.0.0.1", 5000), "http")
    assert (scope["method"], scope["scheme"], scope["path"], scope["raw_path"], scope["query_string"]) == \
        ("POST", "https", "/a b", b"/a%20b", b"q=1")
    assert scope["http_version"] == "2" and scope["headers"] == [(b"host", b"example.com"), (b"x-a", b"1")]


def test_a_host_header_wins_over_authority() -> None:
    scope = request_scope([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a"), (b"host", b"b")],
                          SETTINGS, None, None, "http")
    assert scope["headers"] == [(b"host", b"b")]


def test_h2c_upgrade_headers_do_not_reach_the_http2_scope() -> None:
    headers = [(b"host", b"x"), (b"connection", b"Upgrade, HTTP2-Settings, X-Hop"), (b"upgrade", b"h2c"),
               (b"http2-settings", b"AAMAAABkAAQAoAAAAAIAAAAA"), (b"x-hop", b"1"), (b"accept", b"*/*")]
    assert _without_hop_headers(headers) == [(b"host", b"x"), (b"accept", b"*/*")]
