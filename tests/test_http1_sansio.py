"""HTTP/1.1's sans-I/O piece (protocols/http1.request_scope): the ASGI scope of a parsed head,
for each form of request target, without a socket or a loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tether.protocols.http1 import _Refused, request_scope

SETTINGS = SimpleNamespace(root_path="", lifespan_state={"db": "pool"})
HEADERS = [(b"host", b"example.com"), (b"accept", b"*/*")]


def scope_of(url: bytes, method: str = "GET", version: str = "1.1", settings: object = SETTINGS) -> dict:
    return request_scope(method, url, version, list(HEADERS), settings, ("10.0.0.1", 80), ("10.0.0.2", 5000), "http")


def test_origin_form() -> None:
    scope = scope_of(b"/a%20b/c?x=1&y=%20#frag")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/a b/c", b"/a%20b/c", b"x=1&y=%20")
    assert scope["headers"] == HEADERS and scope["server"] == ("10.0.0.1", 80) and scope["client"] == ("10.0.0.2", 5000)
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}  # (2.3 on purpose: docs/design.md)
    assert set(scope["extensions"]) == {"http.response.trailers", "http.response.pathsend"}


def test_lifespan_state_is_a_copy_per_request() -> None:
    first, second = scope_of(b"/"), scope_of(b"/")
    first["state"]["db"] = "changed"
    assert second["state"] == {"db": "pool"} and SETTINGS.lifespan_state == {"db": "pool"}


def test_asterisk_form_for_options() -> None:
    scope = scope_of(b"*", method="OPTIONS")
    assert (scope["path"], scope["raw_path"]) == ("*", b"*")


def test_absolute_form_replaces_host_with_its_authority() -> None:
    scope = scope_of(b"http://other.example:8080/p?q=1")
    assert (scope["path"], scope["query_string"]) == ("/p", b"q=1")
    assert scope["headers"][0] == (b"host", b"other.example:8080")
    assert scope_of(b"http://other.example")["path"] == "/"


@pytest.mark.parametrize("url", [b"nonsense", b"GET", b"http://"])
def test_a_target_of_no_known_form_is_refused_with_400(url: bytes) -> None:
    with pytest.raises(_Refused) as refused:
        scope_of(url)
    assert refused.value.status == 400


def test_root_path_and_http10_extensions() -> None:
    scope = scope_of(b"/x", version="1.0", settings=SimpleNamespace(root_path="/app", lifespan_state={}))
    assert (scope["root_path"], scope["path"], scope["http_version"]) == ("/app", "/app/x", "1.0")
    assert set(scope["extensions"]) == {"http.response.pathsend"}  # (no trailers without chunked framing)


def test_non_ascii_and_undecodable_paths() -> None:
    assert scope_of("/é".encode())["path"] == "/é"
    assert scope_of(b"/%FF")["path"] == "/\udcff"
