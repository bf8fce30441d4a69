"""HTTP/1.1 request smuggling corpus, read against RFC 9112 (and RFC 9110 where it defines fields).

Sources: RFC 9112 sections 2.2, 3, 5, 6, 7; James Kettle's "HTTP Desync Attacks" (CL.TE, TE.CL,
TE.TE obfuscations); HTTP Garden findings (bare CR, obs-fold, chunk-size overflow, trailer and
chunk-extension abuse, missing last-chunk CRLF); the mutations of defparam's smuggler tool
(space/tab/VT/FF around Transfer-Encoding, `Transfer-Encoding : chunked`, `xchunked`, duplicated
TE lines, line folding).

Every case opens a fresh connection, sends raw bytes in one write, reads until the server closes
(or a short grace after the responses it expects), and asserts one of two outcomes:

* ``Refused(status)``: exactly one response with that status, the connection closed, and the app
  never called.
* ``Served(...)``: exactly the requests a strict RFC 9112 reading gives (method, path, complete
  body, selected headers), each answered 200, optionally followed by one error status for bytes
  that strict reading cannot parse, and never anything more.

``BodyError()`` is the refusal of a request whose head was valid but whose chunked body is not:
Tether streams bodies, so the app may already have been called when the framing error is found
(its task starts after the head). The app must then be told ``http.disconnect`` and never see a
complete body (nor a second request); the client gets one 400 and the connection closes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.support.server import serve
from tests.support.waiting import wait_until
from tests.support.ws import TEXT, frame

pytestmark = pytest.mark.timeout(60)

HOST = b"Host: x"
SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked"
ABC_CHUNKED = b"3\r\nabc\r\n0\r\n\r\n"
READ_TIMEOUT = 2.0  # a case whose server neither answers nor closes fails after this
GRACE = 0.15  # after the expected responses: time for anything extra (a smuggled response) to show


# ---------------------------------------------------------------------- expected outcomes
@dataclass(frozen=True)
class Req:
    """A request the app must see complete: method, path, body, and (optionally) header values."""

    method: str
    path: str
    body: bytes = b""
    headers: dict = field(default_factory=dict)  # name -> list of values, checked exactly


@dataclass(frozen=True)
class Refused:
    status: int


@dataclass(frozen=True)
class Served:
    requests: tuple
    then: int | None = None  # an error status after the served requests (unparseable bytes)
    closes: bool = False  # the connection must close after the last response


@dataclass(frozen=True)
class BodyError:
    status: int = 400


def served(*requests: Req, then: int | None = None, closes: bool = False) -> Served:
    return Served(tuple(requests), then, closes or then is not None)


POST_ABC = Req("POST", "/", b"abc")
GET_ROOT = Req("GET", "/")
GET_SECOND = Req("GET", "/second")


# ---------------------------------------------------------------------- raw request builders
def head(line: bytes, *fields: bytes) -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def get(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return head(line, HOST, *fields)


def post(*fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return head(b"POST / HTTP/" + version, HOST, *fields) + body


def chunked(body: bytes, *fields: bytes) -> bytes:
    return post(*fields, CHUNKED, body=body)


def te(value: bytes, body: bytes = ABC_CHUNKED) -> bytes:
    return post(b"Transfer-Encoding:" + value, body=body)


def cl(value: bytes, body: bytes = b"abc") -> bytes:
    return post(b"Content-Length:" + value, body=body)


def line(request_line: bytes, *fields: bytes) -> bytes:
    return head(request_line, HOST, *fields)


# ---------------------------------------------------------------------- the corpus
# Each entry: (id, raw bytes, expected outcome, why). The "why" cites the rule or the attack.
CASES: list[tuple[str, bytes, Any, str]] = [
    # --- Content-Length with Transfer-Encoding (RFC 9112 §6.1, §6.3; Kettle CL.TE / TE.CL).
    # A server MAY reject such a message, or must let TE win and close afterwards. Tether rejects.
    ("CL.TE classic", post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG"), Refused(400),
     "§6.1: CL+TE MAY be rejected; Tether's choice is 400 + close"),
    ("CL.TE with smuggled request", post(b"Content-Length: 39", CHUNKED, body=b"0\r\n\r\n" + SECOND), Refused(400),
     "a TE-ignoring front end would forward one request; a lenient back end would see two"),
    ("TE.CL classic", post(CHUNKED, b"Content-Length: 3", body=b"8\r\nSMUGGLED\r\n0\r\n\r\n"), Refused(400),
     "§6.1: TE and CL in either order"),
    ("CL.TE with CL 0", post(b"Content-Length: 0", CHUNKED, body=ABC_CHUNKED), Refused(400),
     "CL 0 plus TE: still two framings"),
    ("CL.TE obfuscated xchunked", post(b"Content-Length: 3", b"Transfer-Encoding: xchunked", body=b"abc"), Refused(400),
     "TE present (unknown coding) with CL: never framed by CL"),
    ("CL.TE on HTTP/1.0", post(b"Content-Length: 3", CHUNKED, body=b"abc", version=b"1.0"), Refused(400),
     "§6.1: HTTP/1.0 with TE is faulty framing; with CL as well, refused"),
    ("CL.TE TE folded", post(b"Content-Length: 3", b"Transfer-Encoding:", b" chunked", body=b"abc"), Refused(400),
     "obs-fold hiding TE's value (smuggler 'lineprefix')"),

    # --- Content-Length values (RFC 9112 §6.3 item 5; RFC 9110 §8.6: 1*DIGIT)
    ("CL duplicate identical", post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), Refused(400),
     "RFC 9110 §8.6: MAY reject or collapse identical values; Tether rejects"),
    ("CL conflicting", post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"), Refused(400),
     "§6.3: differing lengths are an unrecoverable error: MUST 400 and close"),
    ("CL comma list identical", cl(b" 3, 3"), Refused(400), "RFC 9110 §8.6: MAY collapse; Tether rejects"),
    ("CL comma list conflicting", cl(b" 3, 4", b"abcd"), Refused(400), "§6.3: invalid CL MUST be 400"),
    ("CL trailing comma", cl(b" 3,"), Refused(400), "not 1*DIGIT"),
    ("CL plus sign", cl(b" +3"), Refused(400), "not 1*DIGIT"),
    ("CL negative", cl(b" -3"), Refused(400), "not 1*DIGIT"),
    ("CL hex", cl(b" 0x3"), Refused(400), "not 1*DIGIT"),
    ("CL inner space", cl(b" 1 2", b"abcdefghijkl"), Refused(400), "not 1*DIGIT"),
    ("CL trailing letter", cl(b" 3a"), Refused(400), "not 1*DIGIT"),
    ("CL empty", cl(b"", b""), Refused(400), "empty is not 1*DIGIT"),
    ("CL overflow 2^64", cl(b" 18446744073709551616"), Refused(400), "a length that wraps in 64 bits"),
    ("CL fullwidth digit", cl(b" \xef\xbc\x93"), Refused(400), "U+FF13 is not DIGIT"),
    ("CL vertical tab", cl(b"\x0b3"), Refused(400), "VT is not OWS"),
    ("CL leading zeros", cl(b" 003"), served(POST_ABC), "1*DIGIT allows leading zeros: length 3"),
    ("CL leading and trailing OWS", cl(b" \t3 \t"), served(POST_ABC), "RFC 9110 §5.5: OWS around the value is not part of it"),
    ("CL shorter than body, rest is next request", cl(b" 3", b"abc" + SECOND), served(POST_ABC, GET_SECOND),
     "the bytes after CL are the next request: two requests, read in order"),
    ("CL cuts into next request", cl(b" 5", b"abc" + SECOND), served(Req("POST", "/", b"abcGE"), then=400),
     "body is 'abcGE'; 'T /second ...' is not a request line"),
    ("GET with CL body holding a request", get(b"Content-Length: %d" % len(SECOND)) + SECOND,
     served(Req("GET", "/", SECOND)), "Kettle CL.0: the body is data, never a request"),

    # --- Transfer-Encoding values and obfuscations (RFC 9112 §6.1, §7; smuggler mutations)
    ("TE chunked then next request", chunked(b"0\r\n\r\n" + SECOND), served(Req("POST", "/"), GET_SECOND),
     "a chunked body ends at the last chunk; what follows is the next request"),
    ("TE xchunked", te(b" xchunked"), Refused(400), "unknown coding, chunked not last: §6.1 MUST 400"),
    ("TE chunked, identity", te(b" chunked, identity"), Refused(400), "chunked not last: §6.1 MUST 400 and close"),
    ("TE identity, chunked", te(b" identity, chunked"), Refused(501), "a coding Tether does not implement: §6.1 SHOULD 501"),
    ("TE gzip, chunked", te(b" gzip, chunked"), Refused(501), "RFC 9112 §6.1: unknown coding SHOULD be 501"),
    ("TE identity only", te(b" identity", b"abc"), Refused(400), "chunked not final on a request: MUST 400"),
    ("TE chunked, chunked", te(b" chunked, chunked"), Refused(400), "§6.1: chunked MUST NOT be applied twice"),
    ("TE chunked duplicated lines", post(CHUNKED, CHUNKED, body=ABC_CHUNKED), Refused(400),
     "two TE lines combine to 'chunked, chunked'"),
    ("TE chunked then identity line", post(CHUNKED, b"Transfer-Encoding: identity", body=ABC_CHUNKED), Refused(400),
     "combined 'chunked, identity': chunked not last"),
    ("TE identity line then chunked line", post(b"Transfer-Encoding: identity", CHUNKED, body=ABC_CHUNKED), Refused(501),
     "RFC 9110 §5.3: two lines are the list 'identity, chunked', answered 501 like the one-line form (Kettle TE.TE)"),
    ("TE unknown line then chunked line", post(b"Transfer-Encoding: x", CHUNKED, body=ABC_CHUNKED), Refused(501),
     "the list 'x, chunked': a front end reading the first line frames differently (TE.TE)"),
    ("TE chunked line then unknown line", post(CHUNKED, b"Transfer-Encoding: x", body=ABC_CHUNKED), Refused(400),
     "the list 'chunked, x': chunked not last, MUST 400"),
    ("TE leading space", te(b"  chunked"), served(POST_ABC), "OWS before the value is not part of it"),
    ("TE leading tab", te(b"\tchunked"), served(POST_ABC), "HTAB is OWS"),
    ("TE trailing space", te(b" chunked "), Refused(400),
     "RFC reads 'chunked' (trailing OWS); Tether refuses it (the safe side of §6.1)"),
    ("TE field name lower case", post(b"transfer-encoding: chunked", body=ABC_CHUNKED), served(POST_ABC),
     "field names are case-insensitive"),
    ("TE field name upper case", post(b"TRANSFER-ENCODING: chunked", body=ABC_CHUNKED), served(POST_ABC),
     "field names are case-insensitive"),
    ("TE NUL after value", te(b" chunked\x00"), Refused(400), "RFC 9110 §5.5: NUL MUST be rejected"),
    ("TE trailing tab", te(b" chunked\t"), Refused(400),
     "RFC reads 'chunked' (trailing OWS); refusing it is the safe side of §6.1"),
    ("TE capitalised", te(b" Chunked"), served(POST_ABC), "§7: coding names are case-insensitive"),
    ("TE upper case", te(b" CHUNKED"), served(POST_ABC), "§7: coding names are case-insensitive"),
    ("TE space before colon", post(b"Transfer-Encoding : chunked", body=ABC_CHUNKED), Refused(400),
     "§5.1: whitespace between name and colon MUST be rejected with 400"),
    ("TE tab before colon", post(b"Transfer-Encoding\t: chunked", body=ABC_CHUNKED), Refused(400),
     "§5.1: whitespace between name and colon MUST be rejected with 400"),
    ("TE vertical tab before value", te(b"\x0bchunked"), Refused(400), "VT is not OWS: the value is not 'chunked'"),
    ("TE form feed before value", te(b"\x0cchunked"), Refused(400), "FF is not OWS: the value is not 'chunked'"),
    ("TE quoted", te(b' "chunked"'), Refused(400), "a quoted string is not the chunked coding"),
    ("TE with parameter", te(b" chunked;q=1"), Refused(400), "chunked takes no parameters"),
    ("TE empty", te(b"", b""), Refused(400), "an empty TE is not chunked-last"),
    ("TE name with underscore is just a field", post(b"Transfer_Encoding: chunked", body=ABC_CHUNKED),
     served(Req("POST", "/"), then=400), "not TE: no body; '3' is then not a request line"),
    ("TE name with prefix is just a field", post(b"X-Transfer-Encoding: chunked", body=ABC_CHUNKED),
     served(Req("POST", "/"), then=400), "not TE: no body; '3' is then not a request line"),
    ("TE on HTTP/1.0 served then closed", post(CHUNKED, b"Connection: keep-alive", body=ABC_CHUNKED + SECOND,
                                               version=b"1.0"),
     served(POST_ABC, closes=True), "§6.1: HTTP/1.0 with TE: faulty framing, MUST close after the response"),

    # --- line folding, bare CR, bare LF, control bytes (RFC 9112 §2.2, §5.2; RFC 9110 §5.5)
    ("obs-fold space", get(b"X-A: a", b" b"), Refused(400), "§5.2: MUST reject with 400 or replace with SP; Tether rejects"),
    ("obs-fold tab", get(b"X-A: a", b"\tb"), Refused(400), "§5.2: obs-fold in a request"),
    ("obs-fold hiding TE", post(b"X-A: a", b" Transfer-Encoding: chunked", body=ABC_CHUNKED), Refused(400),
     "a folded line that a lenient parser reads as a TE field"),
    ("whitespace before first field", head(b"GET / HTTP/1.1", b" Host: x"), Refused(400),
     "§2.2: MUST reject or ignore the indented line (then no Host: 400 either way)"),
    ("indented TE as first field", head(b"POST / HTTP/1.1", b" Transfer-Encoding: chunked", HOST) + ABC_CHUNKED,
     Refused(400), "§2.2: the indented line must not be processed as TE"),
    ("bare CR in value", get(b"X-A: a\rb"), Refused(400), "§2.2: bare CR MUST be rejected or replaced by SP"),
    ("bare CR ending a field line", get(b"X-A: a\rTransfer-Encoding: chunked"), Refused(400),
     "HTTP Garden: bare CR read as a line end hides a TE"),
    ("bare CR ending the request line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", Refused(400), "§2.2: bare CR"),
    ("bare CR in the target", line(b"GET /a\rb HTTP/1.1"), Refused(400), "§2.2: bare CR"),
    ("CR CR LF", b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n", Refused(400), "a CR not followed by LF"),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: x\n\n", Refused(400),
     "§2.2: MAY accept bare LF; Tether (llhttp strict) refuses all of it"),
    ("bare LF in a field line", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", Refused(400), "mixed line endings"),
    ("bare LF ending the head", b"GET / HTTP/1.1\r\nHost: x\r\n\n", Refused(400), "mixed line endings"),
    ("NUL in value", get(b"X-A: a\x00b"), Refused(400), "RFC 9110 §5.5: NUL MUST be rejected or replaced"),
    ("NUL in name", get(b"X-\x00A: a"), Refused(400), "NUL is not a tchar"),
    ("SOH in value", get(b"X-A: a\x01b"), Refused(400), "CTL is not field-vchar"),
    ("DEL in value", get(b"X-A: a\x7fb"), Refused(400), "DEL is not field-vchar"),
    ("ESC in name", get(b"X\x1bA: a"), Refused(400), "CTL is not a tchar"),
    ("vertical tab in value", get(b"X-A: a\x0bb"), Refused(400), "VT is not field-vchar"),
    ("trailing OWS in value", get(b"X-A: a \t"), served(Req("GET", "/", headers={b"x-a": [b"a"]})),
     "RFC 9110 §5.5: OWS around a field value is not part of it"),
    ("obs-text in value", get(b"X-A: caf\xe9"), served(Req("GET", "/", headers={b"x-a": [b"caf\xe9"]})),
     "RFC 9110 §5.5: obs-text is allowed in values, kept as opaque bytes"),
    ("high byte in name", get(b"X-\xe9: a"), Refused(400), "a name is a token"),
    ("space in name", get(b"X A: a"), Refused(400), "a name is a token"),
    ("quote in name", get(b'X"A: a'), Refused(400), "a name is a token"),
    ("bracket in name", get(b"X[A]: a"), Refused(400), "a name is a token"),
    ("whitespace before colon", get(b"X-A : a"), Refused(400), "§5.1: MUST reject with 400"),
    ("whitespace before colon on Host", head(b"GET / HTTP/1.1", b"Host : x"), Refused(400), "§5.1: MUST reject with 400"),
    ("whitespace before colon on CL", post(b"Content-Length : 3", body=b"abc"), Refused(400),
     "§5.1: MUST reject; a lenient parser would frame by it"),
    ("empty field name", get(b": a"), Refused(400), "a name is 1*tchar"),
    ("field line without colon", get(b"X-A a"), Refused(400), "not a field line"),

    # --- chunked framing (RFC 9112 §7.1): errors found inside a body the app is already reading
    ("chunk size overflow", chunked(b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), BodyError(),
     "HTTP Garden: a size that wraps to a small one"),
    ("chunk size 2^64+3 wraps to 3", chunked(b"10000000000000003\r\nabc\r\n0\r\n\r\n"), BodyError(),
     "a parser that wraps would read 3 bytes"),
    ("chunk size negative", chunked(b"-3\r\nabc\r\n0\r\n\r\n"), BodyError(), "not HEXDIG"),
    ("chunk size plus", chunked(b"+3\r\nabc\r\n0\r\n\r\n"), BodyError(), "not HEXDIG"),
    ("chunk size 0x prefix", chunked(b"0x3\r\nabc\r\n0\r\n\r\n"), BodyError(), "not HEXDIG (0 then 'x')"),
    ("chunk size leading space", chunked(b" 3\r\nabc\r\n0\r\n\r\n"), BodyError(), "not HEXDIG"),
    ("chunk size trailing space", chunked(b"3 \r\nabc\r\n0\r\n\r\n"), BodyError(),
     "§7.1: only BWS before ';' — a bare trailing space is invalid"),
    ("chunk size trailing tab", chunked(b"3\t\r\nabc\r\n0\r\n\r\n"), BodyError(), "not HEXDIG"),
    ("chunk size empty", chunked(b"\r\nabc\r\n0\r\n\r\n"), BodyError(), "1*HEXDIG"),
    ("chunk size upper-case hex", chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), served(Req("POST", "/", b"0123456789")),
     "HEXDIG is case-insensitive"),
    ("chunk size leading zeros", chunked(b"0003\r\nabc\r\n0000\r\n\r\n"), served(POST_ABC), "1*HEXDIG"),
    ("chunk extension", chunked(b"3;name=value\r\nabc\r\n0\r\n\r\n"), served(POST_ABC), "§7.1.1: ignored"),
    ("chunk extension quoted", chunked(b'3;name="a b"\r\nabc\r\n0\r\n\r\n'), served(POST_ABC), "quoted-string value"),
    ("chunk extension on the last chunk", chunked(b"3\r\nabc\r\n0;a=b\r\n\r\n"), served(POST_ABC), "§7.1.1"),
    ("chunk extension NUL", chunked(b"3;\x00\r\nabc\r\n0\r\n\r\n"), BodyError(), "not a token"),
    ("chunk extension DEL", chunked(b"3;a\x7f\r\nabc\r\n0\r\n\r\n"), BodyError(), "not a token"),
    ("chunk extension bare CR", chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"), BodyError(), "bare CR"),
    ("chunk extension bare LF", chunked(b"3;a\nb\r\nabc\r\n0\r\n\r\n"), BodyError(), "bare LF ends nothing here"),
    ("chunk extension unquoted space", chunked(b"3;a=b c\r\nabc\r\n0\r\n\r\n"), BodyError(), "token has no space"),
    ("chunk extension after BWS", chunked(b"3 ;a=b\r\nabc\r\n0\r\n\r\n"), BodyError(),
     "§7.1.1 allows BWS before ';'; Tether (llhttp strict) refuses it: the safe side"),
    ("binary chunk data", chunked(b"3\r\n\x00\r\n\r\n0\r\n\r\n"), served(Req("POST", "/", b"\x00\r\n")),
     "chunk data is opaque, CRLF and NUL included"),
    ("chunk extension 100 KB", chunked(b"3;" + b"e" * 100_000 + b"\r\nabc\r\n0\r\n\r\n"), BodyError(),
     "§7.1.1 lets a server limit extensions; Tether allows 16 KiB a chunk (Node's bound, CVE-2024-22019)"),
    ("chunk extension 8 KB", chunked(b"3;" + b"e" * 8_000 + b"\r\nabc\r\n0\r\n\r\n"), served(POST_ABC),
     "within the bound: parsed once, none of it buffered"),
    ("chunk data longer than size", chunked(b"3\r\nabcX\r\n0\r\n\r\n"), BodyError(), "CRLF MUST follow chunk data"),
    ("chunk data missing CRLF", chunked(b"3\r\nabc0\r\n\r\n"), BodyError(), "CRLF MUST follow chunk data"),
    ("LF only after chunk data", chunked(b"3\r\nabc\n0\r\n\r\n"), BodyError(),
     "§2.2's bare-LF allowance covers start-line and fields only"),
    ("CR only after chunk data", chunked(b"3\r\nabc\r0\r\n\r\n"), BodyError(), "bare CR"),
    ("LF only after chunk size", chunked(b"3\nabc\r\n0\r\n\r\n"), BodyError(), "CRLF after the size"),
    ("last chunk without final CRLF then request", chunked(b"3\r\nabc\r\n0\r\n" + SECOND), BodyError(),
     "HTTP Garden: the request line is read as a trailer line and is invalid there"),
    ("chunk data holds a request", chunked(b"%x\r\n" % len(SECOND) + SECOND + b"\r\n0\r\n\r\n"),
     served(Req("POST", "/", SECOND)), "chunk data is data"),
    ("chunked body then garbage", chunked(ABC_CHUNKED + b"GARBAGE\r\n\r\n"), served(POST_ABC, then=400),
     "the body ends at the last chunk; 'GARBAGE' is not a request line"),

    # --- trailers (RFC 9112 §7.1.2: never used for framing)
    ("trailer field", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), served(POST_ABC), "§7.1.2"),
    ("trailer Content-Length", chunked(b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n" + SECOND), BodyError(),
     "RFC 9110 §6.5.1: a framing field is not allowed as a trailer; refusing it is safe (llhttp: CL with TE)"),
    ("trailer Transfer-Encoding", chunked(b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n" + SECOND),
     BodyError(), "RFC 9110 §6.5.1: not allowed as a trailer; refused, and never a second request"),
    ("trailer Host", chunked(b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n"),
     served(Req("POST", "/", b"abc", headers={b"host": [b"x"]})), "§7.1.2: a trailer never replaces a header field"),
    ("trailer without colon", chunked(b"3\r\nabc\r\n0\r\nX-T 1\r\n\r\n"), BodyError(), "not a field line"),
    ("trailer space in name", chunked(b"3\r\nabc\r\n0\r\nX T: 1\r\n\r\n"), BodyError(), "a name is a token"),
    ("trailer whitespace before colon", chunked(b"3\r\nabc\r\n0\r\nX-T : 1\r\n\r\n"), BodyError(), "§5.1"),
    ("trailer obs-fold", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), BodyError(), "§5.2"),
    ("trailer bare CR", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r2\r\n\r\n"), BodyError(), "§2.2"),
    ("trailer NUL", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\x002\r\n\r\n"), BodyError(), "RFC 9110 §5.5"),

    # --- request line (RFC 9112 §3, §2.3; RFC 9110 §2.5)
    ("HTTP/0.9 simple request", b"GET /\r\n\r\n", Refused(400), "HTTP/0.9 is not served"),
    ("HTTP/0.9 in the line", line(b"GET / HTTP/0.9"), Refused(400), "HTTP/0.9 is not served"),
    ("HTTP/1.2", line(b"GET / HTTP/1.2"), Refused(400),
     "RFC 9110 §2.5 SHOULD serve as 1.1; llhttp refuses unknown minor versions: 400, never a second reading"),
    ("HTTP/2.0 in an HTTP/1 line", line(b"GET / HTTP/2.0"), Refused(505), "RFC 9110 §15.6.6: 505"),
    ("HTTP/3.0", line(b"GET / HTTP/3.0"), Refused(400), "llhttp refuses unknown versions before Tether sees them"),
    ("HTTP/9.9", line(b"GET / HTTP/9.9"), Refused(400), "llhttp refuses unknown versions before Tether sees them"),
    ("HTTP/1.10", line(b"GET / HTTP/1.10"), Refused(400), "HTTP-version is exactly DIGIT.DIGIT"),
    ("HTTP/01.1", line(b"GET / HTTP/01.1"), Refused(400), "HTTP-version is exactly DIGIT.DIGIT"),
    ("http lower case", line(b"GET / http/1.1"), Refused(400), "§2.3: HTTP-name is case-sensitive"),
    ("missing version", line(b"GET / "), Refused(400), "not a request line"),
    ("absolute-form", line(b"GET http://example.org/abs?q=1 HTTP/1.1"),
     served(Req("GET", "/abs", headers={b"host": [b"example.org"]})),
     "§3.2.2: the target's authority replaces Host"),
    ("absolute-form with port", line(b"GET http://example.org:8080/p HTTP/1.1"),
     served(Req("GET", "/p", headers={b"host": [b"example.org:8080"]})), "§3.2.2"),
    ("absolute-form without Host", head(b"GET http://example.org/ HTTP/1.1"), Refused(400),
     "§3.2: an HTTP/1.1 request without Host MUST be 400, whatever the target"),
    ("asterisk-form OPTIONS", line(b"OPTIONS * HTTP/1.1"), served(Req("OPTIONS", "*")), "§3.2.4"),
    ("absolute-form without path", line(b"GET http://example.org HTTP/1.1"),
     served(Req("GET", "/", headers={b"host": [b"example.org"]})), "§3.2.2: an empty path is '/'"),
    ("authority-form on GET", line(b"GET example.org:80 HTTP/1.1"), Refused(400), "§3.2.3: authority-form is for CONNECT"),
    ("asterisk-form on GET", line(b"GET * HTTP/1.1"), served(Req("GET", "*")),
     "§3.2.4 restricts the sender only; Tether passes '*' through verbatim, never read as '/'"),
    ("empty Host", head(b"GET / HTTP/1.1", b"Host:"), served(Req("GET", "/", headers={b"host": [b""]})),
     "§3.2: an empty Host value is valid (no authority)"),
    ("missing Host", head(b"GET / HTTP/1.1"), Refused(400), "§3.2: MUST 400"),
    ("duplicate Host", head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), Refused(400), "§3.2: MUST 400"),
    ("duplicate identical Host", head(b"GET / HTTP/1.1", b"Host: a", b"Host: a"), Refused(400), "§3.2: MUST 400"),
    ("Host list", head(b"GET / HTTP/1.1", b"Host: a, b"), Refused(400), "§3.2: an invalid Host value MUST be 400"),
    ("Host with space", head(b"GET / HTTP/1.1", b"Host: a b"), Refused(400), "§3.2: an invalid Host value MUST be 400"),
    ("Host with slash", head(b"GET / HTTP/1.1", b"Host: a/b"), Refused(400), "§3.2: an invalid Host value MUST be 400"),
    ("Host with userinfo", head(b"GET / HTTP/1.1", b"Host: u@a"), Refused(400), "§3.2: an invalid Host value MUST be 400"),
    ("HTTP/1.0 without Host", head(b"GET / HTTP/1.0"), served(GET_ROOT, closes=True), "Host is required of 1.1 only"),
    ("lower-case method", line(b"get / HTTP/1.1"), Refused(400), "methods are case-sensitive; llhttp knows only its list"),
    ("method with @", line(b"G@T / HTTP/1.1"), Refused(400), "a method is a token"),
    ("method with parenthesis", line(b"GE(T / HTTP/1.1"), Refused(400), "a method is a token"),
    ("unknown method", line(b"FOO / HTTP/1.1"), Refused(400), "llhttp refuses methods it does not know"),
    ("double space after method", line(b"GET  / HTTP/1.1"), served(GET_ROOT),
     "§3: MAY split on whitespace runs; llhttp does so for SP (only), giving the one obvious reading"),
    ("double space before version", line(b"GET /  HTTP/1.1"), served(GET_ROOT), "§3: MAY split on whitespace runs"),
    ("leading space", line(b" GET / HTTP/1.1"), Refused(400), "§3: the line starts with the method"),
    ("trailing space", line(b"GET / HTTP/1.1 "), Refused(400), "§3: the version ends the line"),
    ("tab separators", line(b"GET\t/\tHTTP/1.1"), Refused(400), "§3: SP only"),
    ("vertical tab separator", line(b"GET\x0b/ HTTP/1.1"), Refused(400), "§3: SP only"),
    ("four words", line(b"GET / HTTP/1.1 x"), Refused(400), "not a request line"),
    ("space in target", line(b"GET /a b HTTP/1.1"), Refused(400), "§3: SP ends the target"),
    ("control byte in target", line(b"GET /a\x01b HTTP/1.1"), Refused(400), "not a URI character"),
    ("DEL in target", line(b"GET /a\x7fb HTTP/1.1"), Refused(400), "not a URI character"),
    ("NUL in target", line(b"GET /a\x00b HTTP/1.1"), Refused(400), "not a URI character"),
    ("empty lines before the request", b"\r\n\r\n" + line(b"GET / HTTP/1.1"), served(GET_ROOT),
     "§2.2: SHOULD ignore at least one empty line before the request line"),

    # --- pipelining and the second request (a strict reading sees exactly these)
    ("two pipelined GETs", line(b"GET /1 HTTP/1.1") + line(b"GET /2 HTTP/1.1"),
     served(Req("GET", "/1"), Req("GET", "/2")), "§9.3.2: pipelined requests, in order"),
    ("CL 0 then a request", post(b"Content-Length: 0") + SECOND, served(Req("POST", "/"), GET_SECOND), "§6.3"),
    ("no length then a request", post() + SECOND, served(Req("POST", "/"), GET_SECOND),
     "§6.3 item 6: a request without CL or TE has no body"),
    ("bad CL on the pipelined request", cl(b" 3") + line(b"POST /second HTTP/1.1", b"Content-Length: x") + b"abc",
     served(POST_ABC, then=400), "the first is served, the second refused, nothing after"),
    ("CL.TE on the pipelined request", cl(b" 3") + line(b"POST /second HTTP/1.1", b"Content-Length: 5", CHUNKED)
     + b"0\r\n\r\n" + SECOND, served(POST_ABC, then=400), "the smuggle attempt behind a good request"),
    ("empty line between pipelined requests", chunked(ABC_CHUNKED + b"\r\n" + SECOND), served(POST_ABC, GET_SECOND),
     "§2.2: SHOULD ignore an empty line before a request line"),
    ("HTTP/1.0 keep-alive then a request", head(b"GET /1 HTTP/1.0", b"Connection: keep-alive") + SECOND,
     served(Req("GET", "/1"), GET_SECOND), "HTTP/1.0 persistence asked for: the next request is served"),
    ("HTTP/1.0 without keep-alive then a request", head(b"POST / HTTP/1.0", b"Content-Length: 3") + b"abc" + SECOND,
     served(POST_ABC, closes=True), "HTTP/1.0 closes by default: nothing after it is read"),
    ("Upgrade ignored then a request", get(b"Connection: Upgrade", b"Upgrade: foo") + SECOND,
     served(GET_ROOT, closes=True), "an upgrade Tether does not do: served as HTTP/1.1, then closed (never parsed on)"),
    ("Upgrade ignored with a CL body", get(b"Connection: Upgrade", b"Upgrade: foo", b"Content-Length: 3") + b"abc",
     served(Req("GET", "/", b"abc"), closes=True),
     "RFC 9110 §7.8: an ignored Upgrade leaves HTTP/1.1 framing: the body is the 3 bytes after the head"),
    ("Upgrade ignored with a chunked body", get(b"Connection: Upgrade", b"Upgrade: foo", CHUNKED) + ABC_CHUNKED,
     served(Req("GET", "/", b"abc"), closes=True), "RFC 9110 §7.8: the chunked body is still the body"),
    ("h2c upgrade with a body", get(b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAAQAAP__",
                                     b"Content-Length: 3") + b"abc" + SECOND,
     served(Req("GET", "/", b"abc"), closes=True), "RFC 7540 §3.2: no h2c with a body; served once, then closed"),
    ("request after Connection: close not served", line(b"GET /1 HTTP/1.1", b"Connection: close") + SECOND,
     served(Req("GET", "/1"), closes=True), "§9.6: nothing after a close is processed"),
    ("HEAD with a CL body", line(b"HEAD / HTTP/1.1", b"Content-Length: 3") + b"abc" + SECOND,
     served(Req("HEAD", "/", b"abc"), GET_SECOND), "a request body on HEAD is still framed by CL"),
    ("Expect 100-continue with the body sent", post(b"Expect: 100-continue", b"Content-Length: 3", body=b"abc") + SECOND,
     served(POST_ABC, GET_SECOND), "the body follows the head; no extra request"),

    # --- limits (RFC 9112 §3 414; RFC 6585 431)
    ("request line too long", line(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), Refused(414), "limit_request_line 8190"),
    ("field too large", get(b"X-A: " + b"a" * 9000), Refused(431), "limit_request_field_size 8190"),
    ("too many fields", get(*[b"X-%d: a" % i for i in range(120)]), Refused(431), "limit_request_fields 100"),
]


# ---------------------------------------------------------------------- the app and the server
class Recording:
    """Records every request it sees, by client port: (method, path, headers, body, complete).
    The headers are read once the body is complete, so that trailer handling shows in them."""

    def __init__(self) -> None:
        self.seen: dict[int, list[dict]] = {}

    def of(self, port: int) -> list[dict]:
        return self.seen.get(port, [])

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        entry = {"method": scope["method"], "path": scope["path"], "headers": list(scope["headers"]),
                 "body": b"", "complete": False}
        self.seen.setdefault(scope["client"][1], []).append(entry)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            entry["body"] += message.get("body", b"")
            if not message.get("more_body"):
                break
        entry["complete"] = True
        entry["headers"] = list(scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


    async def websocket(self, scope: dict, receive: Any, send: Any) -> None:
        """Accept, record the first message (if one comes within 0.3 s) as the body, close."""
        entry = {"method": "WEBSOCKET", "path": scope["path"], "headers": list(scope["headers"]),
                 "body": b"", "complete": False}
        self.seen.setdefault(scope["client"][1], []).append(entry)
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        try:
            message = await asyncio.wait_for(receive(), 0.3)
        except asyncio.TimeoutError:
            message = {"type": "none"}
        if message["type"] == "websocket.receive":
            entry["body"] = message.get("bytes") or message.get("text", "").encode()
        entry["complete"] = True
        await send({"type": "websocket.close"})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, Recording]]:
    app = Recording()
    with serve(app) as srv:
        yield srv, app


# ---------------------------------------------------------------------- the client side
@dataclass
class Exchange:
    local_port: int
    statuses: list[int]
    closed: bool
    leftover: bytes  # bytes after the last complete response (must be none)


def parse_responses(data: bytes) -> tuple[list[int], bytes]:
    """Final statuses of the complete responses in ``data`` (1xx skipped), and what is left."""
    statuses = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return statuses, data
        head_lines = data[:end].split(b"\r\n")
        status = int(head_lines[0].split(b" ")[1])
        length = 0
        for header_line in head_lines[1:]:
            name, _, value = header_line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(data) < end + 4 + length:
            return statuses, data
        data = data[end + 4 + length:]
        if status >= 200:
            statuses.append(status)


def exchange(app: Recording, port: int, raw: bytes, responses: int) -> Exchange:
    """Send ``raw``; read until the server closes, or until ``responses`` arrived and GRACE passed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    local_port = sock.getsockname()[1]
    app.seen.pop(local_port, None)  # (an earlier case's closed connection may have had this port)
    try:
        sock.sendall(raw)
    except OSError:  # (the server may refuse and close before reading it all)
        pass
    data, closed = b"", False
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if len(parse_responses(data)[0]) >= responses:
                deadline = min(deadline, time.monotonic() + GRACE)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        sock.close()
    statuses, leftover = parse_responses(data)
    return Exchange(local_port, statuses, closed, leftover)


def field_values(entry: dict, name: bytes) -> list[bytes]:
    return [value for field_name, value in entry["headers"] if field_name == name]


# ---------------------------------------------------------------------- the tests
def expected_responses(expected: Any) -> int:
    if isinstance(expected, Served):
        return len(expected.requests) + (expected.then is not None)
    return 1


@pytest.mark.parametrize("raw, expected, why", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_smuggling_case(server: tuple, raw: bytes, expected: Any, why: str) -> None:
    srv, app = server
    result = exchange(app, srv.port, raw, expected_responses(expected))
    assert result.leftover == b"", f"bytes that are no complete response: {result.leftover[:200]!r}"
    if isinstance(expected, Served):
        check_served(app, result, expected)
    elif isinstance(expected, BodyError):
        check_body_error(app, result, expected)
    else:
        check_refused(app, result, expected)


def check_refused(app: Recording, result: Exchange, expected: Refused) -> None:
    assert result.statuses == [expected.status]
    assert result.closed, "the connection must close after a refused request"
    time.sleep(0.05)  # (an app wrongly started would have recorded its request by now)
    assert app.of(result.local_port) == [], "the app was called for a request that must be refused"


def check_body_error(app: Recording, result: Exchange, expected: BodyError) -> None:
    assert result.statuses == [expected.status]
    assert result.closed, "the connection must close after a framing error"
    time.sleep(0.05)  # (the app's task runs after the error is answered, when it runs at all)
    seen = app.of(result.local_port)
    assert len(seen) <= 1, f"at most the one aborted request, got {seen}"
    assert not any(entry["complete"] for entry in seen), f"the app got a complete body from a broken framing: {seen}"


def check_served(app: Recording, result: Exchange, expected: Served) -> None:
    statuses = [200] * len(expected.requests) + ([expected.then] if expected.then is not None else [])
    assert result.statuses == statuses
    if expected.closes:
        assert result.closed, "the connection must close after these responses"
    else:
        assert not result.closed, "a keep-alive connection closed after valid requests"
    seen = wait_until(lambda: app.of(result.local_port), 1.0, "the app's record")
    time.sleep(0.02)
    got = [(entry["method"], entry["path"], entry["body"], entry["complete"]) for entry in seen]
    assert got == [(req.method, req.path, req.body, True) for req in expected.requests]
    for entry, req in zip(seen, expected.requests):
        for name, values in req.headers.items():
            assert field_values(entry, name) == values


def test_corpus_size_and_ids() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 70


def test_websocket_upgrade_body_is_not_websocket_data(server: tuple) -> None:
    """RFC 9110 §7.8: the new protocol starts after the complete request message, so the bytes a
    Content-Length declares are HTTP content, never WebSocket frames. A front end that does not
    switch reads them as the body; reading them as frames smuggles a message to the app."""
    srv, app = server
    body = frame(TEXT, b"from-the-http-body")  # a masked text frame
    raw = head(b"GET /ws HTTP/1.1", HOST, b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Content-Length: %d" % len(body)) + body
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=READ_TIMEOUT)
    local_port = sock.getsockname()[1]
    app.seen.pop(local_port, None)
    data = b""
    try:
        sock.sendall(raw)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not data.endswith(b"\x88\x02\x03\xe8"):  # (until the close frame)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if data.startswith(b"HTTP/1.1 400 "):  # (refusing an upgrade request with a body is the other safe answer)
        assert app.of(local_port) == []
        return
    assert data.startswith(b"HTTP/1.1 101 "), data[:100]
    seen = wait_until(lambda: [e for e in app.of(local_port) if e["complete"]], 1.0, "the WebSocket app's record")
    assert seen[0]["body"] == b"", f"the HTTP body reached the app as a WebSocket message: {seen[0]['body']!r}"
