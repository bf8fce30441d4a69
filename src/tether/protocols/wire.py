"""What the wire protocols share, as plain functions over bytes (sans-I/O, no event loop).

* ``check_field``: the one check of a header field the application gives us (response headers
  and trailers on HTTP/1.1 and HTTP/2, WebSocket handshake headers): a name that is an RFC 9110
  token, a value without CR, LF or NUL. Whatever the protocol, a field that could split a
  message here or after a proxy's translation (an HTTP/2 name with CRLF becomes two lines on a
  downstream HTTP/1.1 hop) never reaches the wire; the app's ``send()`` raises instead.
* HTTP/1.1 response framing (``build_head``, ``chunk``, ``trailer_block``, ``simple_response``),
  used by HTTP/1.1 and by the WebSocket handshake's answers, which are HTTP/1.1 responses.
* Request-side helpers: ``decode_path``, ``declared_length``.

Nothing here imports a protocol module; every protocol module imports from here.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

NO_BODY_STATUSES = frozenset({204, 304} | set(range(100, 200)))

# RFC 9110 section 5.6.2: field-name = token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_field(item: Any, what: str = "response header") -> tuple[bytes, bytes]:
    """``item`` as a (name, value) pair of bytes, or RuntimeError saying what is wrong with it."""
    try:
        name, value = item
    except (TypeError, ValueError):
        raise RuntimeError(f"{what}s must be (name, value) pairs, got {item!r}") from None
    if type(name) is not bytes or type(value) is not bytes:
        raise RuntimeError(f"{what} names and values must be bytes, got {item!r}")
    if _TOKEN.fullmatch(name) is None:
        raise RuntimeError(f"invalid {what} name {name!r}: it must be an RFC 9110 token")
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        raise RuntimeError(f"{what} {name!r}: values must not contain CR, LF or NUL characters")
    return name, value


# ---------------------------------------------------------------------- HTTP/1.1 responses
def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("ascii"))


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


def status_text(code: int) -> bytes:
    """The body of an error response Tether writes itself: its reason phrase."""
    return STATUS_LINES[code][13:-2] or b"Error"


class HeadInfo:
    """What ``build_head`` learned from the app's headers."""

    __slots__ = ("head", "content_length", "chunked", "keep_alive")

    def __init__(self, head: bytes, content_length: int | None, chunked: bool, keep_alive: bool) -> None:
        self.head = head
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive


def build_head(
    status: int,
    headers: Any,
    body_len: int,
    more: bool,
    keep_alive: bool,
    http11: bool,
    head_request: bool,
    extra: bytes,
) -> HeadInfo:
    """Serialise a response head. ``extra`` is the pre-formatted server/date/default lines.

    Raises RuntimeError for headers that ``check_field`` refuses.
    """
    try:
        key = (status, *headers)
        app_part = _APP_PARTS.get(key)
    except TypeError:  # (unhashable header items, e.g. lists: not cached)
        key = app_part = None
    if app_part is None:
        app_part = _app_part(status, headers)
        if key is not None:
            if len(_APP_PARTS) >= 512:
                _APP_PARTS.clear()
            _APP_PARTS[key] = app_part
    block, content_length, chunked, close = app_part
    if close:
        keep_alive = False
    if not http11:
        block = block.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        chunked = False
    parts = [block, extra]
    if status in NO_BODY_STATUSES:
        chunked = False
    elif content_length is None and not chunked:
        if not more:
            if not (head_request and body_len == 0):
                parts.append(b"content-length: %d\r\n" % body_len)
        elif http11:
            chunked = True
        else:
            keep_alive = False  # HTTP/1.0 without a length: the close ends the body
    if content_length is not None:
        parts.append(b"content-length: %d\r\n" % content_length)
        chunked = False
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif not http11:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return HeadInfo(b"".join(parts), content_length, chunked, keep_alive)


# The status line and the app's header lines, by (status, *headers): most apps send the same
# few header lists again and again, so the loop and checks below run once per distinct list.
_APP_PARTS: dict = {}


def _app_part(status: int, headers: Any) -> tuple:
    """(status line + app header lines, content-length, chunked asked, close asked)."""
    parts = [STATUS_LINES[status]]
    content_length = None
    chunked = False
    close = False
    for item in headers:
        name, value = check_field(item)
        lname = name.lower()
        if lname == b"content-length":
            if not value.strip().isdigit():
                raise RuntimeError(f"invalid content-length header {value!r}")
            content_length = int(value)
            continue  # written once, by build_head
        elif lname == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
            continue  # framing is ours to do
        elif lname == b"connection":
            if value.lower() == b"close":
                close = True
            continue
        parts.append(name + b": " + value + b"\r\n")
    return b"".join(parts), content_length, chunked, close


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body) if body else b""


def trailer_block(headers: Any) -> bytes:
    parts = [b"0\r\n"]
    for item in headers:
        name, value = check_field(item, "trailer")
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def simple_response(status: int, body: bytes, extra: bytes, keep_alive: bool) -> bytes:
    """A complete plain-text response that Tether writes itself (errors, refusals)."""
    return (
        STATUS_LINES[status]
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body)
        + extra
        + (b"" if keep_alive else b"connection: close\r\n")
        + b"\r\n"
        + body
    )


# ---------------------------------------------------------------------- requests
def declared_length(headers: list) -> int:
    """The request's Content-Length (the parser has already refused malformed ones), or 0."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def decode_path(raw_path: bytes) -> str:
    """The ASGI ``path``: percent-decoded, UTF-8 (surrogate escapes for other bytes)."""
    if b"%" in raw_path:
        raw_path = unquote_to_bytes(raw_path)
    try:
        return raw_path.decode("ascii")
    except UnicodeDecodeError:
        return raw_path.decode("utf-8", "surrogateescape")
