"""HTTP/1.1 fuzzer for Tether over real sockets.

    python -m tests.fuzz --minutes N [--inputs N] [--port P] [--seed S] [--connections C]
    python -m tests.fuzz --replay fuzz-failure-....json     (replays a saved reproducer)

Starts ``python -m tether tests.fuzz:app`` (short timeouts) and feeds it random and mutated
requests from many concurrent connections. Each connection sends a few valid packets (1-3
pipelined requests, each answer checked against the body's checksum), then one last packet,
usually mutated, and ends it: half-close and read to EOF (most often), close, RST, or wait for
the server's own timeout. One packet is one input.

Oracle: the server process stays alive and answers a health request every second; every
connection gets its answers or a close within a bound set by the server's timeouts (else: a
hang); every byte the server writes parses as HTTP/1.1 responses with a valid status line; a
valid request gets the right checksum. Any failure is saved as a JSON reproducer. The summary
is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.asgi import receive_body
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parent.parent

# Server timeouts, kept short so that a hang is told from a slow answer quickly.
SERVER_OPTIONS = ["--timeout-keep-alive", "1", "--timeout-request-header", "2", "--timeout-request-body", "2",
                  "--timeout-write", "2", "--timeout-graceful-shutdown", "2", "--no-access-log",
                  "--log-level", "warning", "--lifespan", "off"]
# Seconds a connection may stay silent before it is a hang: the longest server timeout (2 s),
# the once-a-second timeout sweep, and a wide margin for a loaded 2-core machine.
HANG_TIMEOUT = 10.0
HEALTH_INTERVAL = 1.0


# ---------------------------------------------------------------------- the app under test
def checksum(body: bytes) -> bytes:
    return b"%d:%s" % (len(body), hashlib.sha256(body).hexdigest()[:16].encode())


async def app(scope, receive, send):
    """Reads the whole body, answers with its length and checksum (and the method, for HEAD)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})  # before accept: a 403
        return
    if scope["type"] != "http":
        return
    body = await receive_body(receive)
    if body is None:
        return
    answer = server_usage() if scope["path"] == "/__usage" else checksum(body)
    headers = [(b"content-type", b"text/plain"), (b"x-method", scope["method"].encode("latin-1"))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def server_usage() -> bytes:
    """What a leak would show: the server process's asyncio tasks and open descriptors."""
    return json.dumps({"tasks": len(asyncio.all_tasks()), "fds": len(os.listdir("/proc/self/fd")) - 1}).encode()


# ---------------------------------------------------------------------- request generation
# (llhttp knows a fixed set of methods; any other token is a 400, so those are mutations)
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"PROPFIND"]
BODY_METHODS = [b"POST", b"PUT", b"PATCH", b"DELETE", b"PROPFIND"]
SPECIALS = [b"\xc3\xa9", b"#", b"?", b"%", b"%0", b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b"\r\n\r\n", b"\x7f", b"\xff", b";", b",", b"\r\n "]
WEIRD_METHODS = [b"get", b"G ET", b"", b"GET\x00", b"\xffGET", b"M" * 300, b"CONNECT", b"TRACE", b"PRI", b"GET GET",
                 b"X-CUSTOM", b"BREW"]
WEIRD_VERSIONS = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b"http/1.1", b"HTTP/1", b"HTTP/1.10",
                  b"HTTP/9.9", b"", b"HTTP/1.1 ", b"HTTP/\x00.1", b"HTTP/11"]
WEIRD_LENGTHS = [b"-1", b"99999999999999999999999", b"18446744073709551616", b"4294967296", b"0x10", b"+5",
                 b"1, 1", b"", b" 5 ", b"5\x00", b"1e3", b"100000000", b"7", b"00000000000000000003"]
WEIRD_CHUNK_SIZES = [b"ffffffffffffffff", b"-1", b"0x5", b"5 ; ext", b"5;a=\"b\"", b"  5", b"fffffffffffffffff",
                     b"", b"g", b"5\x00", b"0000000000000000000000000005", b"5;" + b"e" * 5000]
EXTRA_HEADERS = [b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: identity",
                 b"Expect: 100-continue", b"Connection: close", b"Connection: keep-alive, Upgrade",
                 b"Upgrade: websocket", b"Upgrade: h2c", b"Host: a", b"Host:", b"X-Forwarded-For: 1.2.3.4",
                 b"Content-Type: multipart/form-data; boundary=x", b"Te: trailers", b"Cookie: " + b"c" * 2000,
                 b"X-Long: " + b"v" * 9000]


def random_path(rng: random.Random) -> bytes:
    parts = [b"", b"a", b"b%20c", b"%ff", b"..", b"%C3%A9", b"x" * rng.randint(1, 40)]
    path = b"/" + b"/".join(rng.choice(parts) for _ in range(rng.randint(0, 4)))
    if rng.random() < 0.3:
        path += b"?q=" + str(rng.randint(0, 10**6)).encode() + rng.choice([b"", b"&r=%26", b"#frag"])
    return path


def random_body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.4:
        return b""
    size = rng.randint(1, 200) if roll < 0.9 else rng.randint(1000, 200_000)
    return rng.randbytes(size)


def chunked(rng: random.Random, body: bytes) -> bytes:
    """A valid chunked encoding with random chunk sizes, extensions and trailers."""
    out, pos = [], 0
    while pos < len(body):
        size = rng.randint(1, max(1, min(len(body) - pos, rng.choice([1, 7, 100, 70000]))))
        ext = rng.choice([b"", b"", b";x=1", b";name=\"v\""])
        digits = rng.choice(["%x", "%X", "%04x"]) % size
        out.append(digits.encode() + ext + b"\r\n" + body[pos:pos + size] + b"\r\n")
        pos += size
    trailer = rng.choice([b"", b"", b"X-Trailer: t\r\n"])
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


class Expected:
    """What a valid request must get: its method (HEAD has no body) and its body's checksum."""

    __slots__ = ("method", "answer")

    def __init__(self, method: bytes, body: bytes) -> None:
        self.method = method
        self.answer = b"" if method == b"HEAD" else checksum(body)


def valid_request(rng: random.Random) -> tuple[bytes, Expected]:
    method = rng.choice(BODY_METHODS if rng.random() < 0.5 else METHODS)
    body = random_body(rng) if method in BODY_METHODS else b""
    headers = [b"Host: fuzz"]
    for _ in range(rng.randint(0, 4)):
        headers.append(b"X-H%d: %s" % (rng.randint(0, 99), rng.choice([b"", b"v", b"a b", b"\tq", b"x" * 100])))
    if body and rng.random() < 0.5:
        headers.append(rng.choice([b"Transfer-Encoding: chunked", b"transfer-encoding: CHUNKED"]))
        payload = chunked(rng, body)
    else:
        if body or method in BODY_METHODS:
            headers.append(rng.choice([b"Content-Length: %d", b"content-length:%d", b"CONTENT-LENGTH:  %d"]) % len(body))
        payload = body
    if body and rng.random() < 0.1:
        headers.append(b"Expect: 100-continue")
    rng.shuffle(headers)
    head = method + b" " + random_path(rng) + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return head + payload, Expected(method, body)


def _lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each CRLF-terminated line in the head."""
    spans, pos = [], 0
    head_end = data.find(b"\r\n\r\n")
    limit = head_end if head_end >= 0 else len(data)
    while pos < limit:
        end = data.find(b"\r\n", pos)
        if end < 0 or end > limit:
            break
        spans.append((pos, end + 2))
        pos = end + 2
    return spans


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random mutations of a request."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(14)
        pos = rng.randint(0, len(buf))
        if kind == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert a character that matters to the grammar
            buf[pos:pos] = rng.choice(SPECIALS)
        elif kind == 2 and buf:  # delete a range
            buf[pos:pos + rng.randint(1, 8)] = b""
        elif kind == 3:  # truncate
            del buf[pos:]
        elif kind == 4:  # duplicate a header line (or the request line)
            spans = _lines(bytes(buf))
            if spans:
                start, end = rng.choice(spans)
                line = buf[start:end]
                at = rng.choice(spans)[1]
                buf[at:at] = line
        elif kind == 5:  # another method
            sp = buf.find(b" ")
            buf[0:max(sp, 0)] = rng.choice(WEIRD_METHODS + METHODS)
        elif kind == 6:  # another version
            end = buf.find(b"\r\n")
            start = buf.rfind(b" ", 0, end) + 1 if end > 0 else 0
            if end > 0:
                buf[start:end] = rng.choice(WEIRD_VERSIONS)
        elif kind == 7:  # a Content-Length header, often absurd
            _insert_header(rng, buf, b"Content-Length: " + rng.choice(WEIRD_LENGTHS))
        elif kind == 8:  # a framing or semantic header
            _insert_header(rng, buf, rng.choice(EXTRA_HEADERS))
        elif kind == 9:  # a chunked body with broken sizes
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                size = rng.choice(WEIRD_CHUNK_SIZES)
                buf[end + 4:] = size + b"\r\n" + rng.randbytes(rng.randint(0, 20)) + rng.choice([b"\r\n", b"", b"\n"]) + \
                    rng.choice([b"0\r\n\r\n", b"0\r\n", b"", b"0\r\nX: y\r\n\r\n", b"0\n\n"])
                _insert_header(rng, buf, b"Transfer-Encoding: chunked")
        elif kind == 10:  # random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == 11 and buf:  # repeat a slice
            start = rng.randrange(len(buf))
            piece = buf[start:start + rng.randint(1, 64)]
            buf[pos:pos] = piece * rng.randint(1, 4)
        elif kind == 12:  # a bare LF where CRLF was
            i = buf.find(b"\r\n", pos)
            if i >= 0:
                buf[i:i + 2] = rng.choice([b"\n", b"\r", b"\n\r", b"\r\r\n"])
        elif kind == 13:  # obs-fold or whitespace before the colon
            spans = _lines(bytes(buf))[1:]
            if spans:
                start, end = rng.choice(spans)
                colon = buf.find(b":", start, end)
                if colon > 0:
                    buf[colon:colon] = rng.choice([b" ", b"\t", b"\r\n "])
    return bytes(buf)


def _insert_header(rng: random.Random, buf: bytearray, header: bytes) -> None:
    spans = _lines(bytes(buf))
    at = rng.choice(spans)[1] if spans else len(buf)
    buf[at:at] = header + b"\r\n"


def random_packet(rng: random.Random, mutated: bool) -> tuple[bytes, list[Expected] | None]:
    """1-3 pipelined requests. Returns the bytes and, if every request is valid, what each gets."""
    requests, expected = [], []
    for _ in range(rng.choices([1, 2, 3], [6, 3, 1])[0]):
        data, exp = valid_request(rng)
        requests.append(data)
        expected.append(exp)
    if not mutated:
        return b"".join(requests), expected
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(1, 300)), None  # no HTTP at all
    victim = rng.randrange(len(requests))
    requests[victim] = mutate(rng, requests[victim])
    return b"".join(requests), None


# ---------------------------------------------------------------------- response parsing
# (Tether answers an HTTP/1.0 request with an HTTP/1.0 status line, deliberately)
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9](?: [\x20-\x7e\t]*)?")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x20-\x7e\t\x80-\xff]*)")


class BadResponse(Exception):
    """The server wrote something that is not an HTTP/1.1 response."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def parse_response(buf: bytes, pos: int, eof: bool) -> tuple[Response | None, int]:
    """One response at buf[pos:]: (response, next position), or (None, pos) if incomplete."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        prefix = buf[pos:pos + 9]
        if not (b"HTTP/1.1 ".startswith(prefix) or b"HTTP/1.0 ".startswith(prefix)):
            raise BadResponse(f"not a status line: {buf[pos:pos + 80]!r}")
        if eof and len(buf) > pos:
            raise BadResponse(f"truncated head: {buf[pos:pos + 200]!r}")
        return None, pos
    lines = buf[pos:end].split(b"\r\n")
    if not STATUS_LINE.fullmatch(lines[0]):
        raise BadResponse(f"bad status line: {lines[0][:100]!r}")
    status = int(lines[0][9:12])
    headers: dict = {}
    for line in lines[1:]:
        match = HEADER_LINE.fullmatch(line)
        if not match:
            raise BadResponse(f"bad header line: {line[:100]!r}")
        headers[match.group(1).lower()] = match.group(2).rstrip(b" \t")
    start = end + 4
    if status < 200 or status in (204, 304) or headers.get(b"x-method") == b"HEAD":
        return Response(status, headers, b""), start
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return _parse_chunked(buf, start, status, headers, eof)
    if b"content-length" in headers:
        length = headers[b"content-length"]
        if not length.isdigit():
            raise BadResponse(f"bad content-length {length!r}")
        stop = start + int(length)
        if stop > len(buf):
            if eof:
                raise BadResponse(f"body truncated: {len(buf) - start} of {int(length)} bytes")
            return None, pos
        return Response(status, headers, buf[start:stop]), stop
    if not eof:
        return None, pos  # delimited by the close
    return Response(status, headers, buf[start:]), len(buf)


def _parse_chunked(buf: bytes, pos: int, status: int, headers: dict, eof: bool) -> tuple[Response | None, int]:
    body, start = [], pos
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if eof:
                raise BadResponse("chunked body truncated")
            return None, start
        size = int(buf[pos:line_end].split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n", line_end + 2)
            while trailer_end >= 0 and trailer_end != line_end + 2 and buf[trailer_end - 2:trailer_end] != b"\r\n":
                trailer_end = buf.find(b"\r\n", trailer_end + 2)
            if trailer_end < 0:
                if eof:
                    raise BadResponse("chunked trailer truncated")
                return None, start
            return Response(status, headers, b"".join(body)), trailer_end + 2
        if line_end + 2 + size + 2 > len(buf):
            if eof:
                raise BadResponse("chunk truncated")
            return None, start
        body.append(buf[line_end + 2:line_end + 2 + size])
        pos = line_end + 2 + size + 2


def parse_all(buf: bytes, eof: bool) -> tuple[list[Response], int]:
    """Every complete response in buf (final ones and 1xx), and where the rest starts."""
    responses, pos = [], 0
    while pos < len(buf):
        response, pos_next = parse_response(buf, pos, eof)
        if response is None:
            break
        responses.append(response)
        pos = pos_next
        if response.status == 101:
            return responses, len(buf)  # another protocol follows
    return responses, pos


# ---------------------------------------------------------------------- the fuzzing client
class Failure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Counters:
    def __init__(self) -> None:
        self.inputs = 0
        self.connections = 0
        self.requests = 0
        self.verified_answers = 0
        self.responses = 0
        self.statuses: collections.Counter = collections.Counter()
        self.endings: collections.Counter = collections.Counter()
        self.failures: collections.Counter = collections.Counter()
        self.health_checks = 0
        self.reproducers: list[str] = []


class Fuzzer:
    def __init__(self, port: int, seed: int, out_dir: Path, max_reproducers: int = 20) -> None:
        self.port = port
        self.seed = seed
        self.out_dir = out_dir
        self.max_reproducers = max_reproducers
        self.counters = Counters()
        self.recent: collections.deque = collections.deque(maxlen=200)  # transcripts, for a crash
        self.stop = False
        self.loop = asyncio.get_running_loop()

    async def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(self.loop.sock_connect(sock, ("127.0.0.1", self.port)), 10)
        return sock

    async def read_until(self, sock: socket.socket, buf: bytearray, done, timeout: float) -> bool:
        """Read into buf until done(buf, eof) or EOF; returns eof. Raises Failure('hang')."""
        deadline = self.loop.time() + timeout
        while not done(buf, False):
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise Failure("hang", f"no answer or close within {timeout}s; got {bytes(buf[-300:])!r}")
            try:
                data = await asyncio.wait_for(self.loop.sock_recv(sock, 65536), remaining)
            except asyncio.TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            buf += data
        return False

    async def run_connection(self, rng: random.Random) -> None:
        steps: list = []
        self.recent.append(steps)
        self.counters.connections += 1
        try:
            await self._conversation(rng, steps)
        except Failure as failure:
            self.record_failure(failure, steps)
        except (ConnectionResetError, BrokenPipeError):
            self.counters.endings["reset by server"] += 1
        except OSError as exc:
            self.record_failure(Failure("socket error", repr(exc)), steps)

    async def _conversation(self, rng: random.Random, steps: list) -> None:
        sock = await self.connect()
        buf = bytearray()
        try:
            for _ in range(rng.choices([0, 1, 3, 10, 30], [2, 3, 3, 2, 1])[0]):
                packet, expected = random_packet(rng, mutated=False)
                if not await self.send_valid(sock, packet, expected, buf, steps):
                    return  # the server closed (Connection: close and the like)
            await self.send_last(rng, sock, buf, steps)
        finally:
            sock.close()

    async def send_valid(self, sock, packet: bytes, expected: list, buf: bytearray, steps: list) -> bool:
        steps.append({"send": packet.decode("latin-1")})
        self.counters.inputs += 1
        self.counters.requests += len(expected)
        await self.loop.sock_sendall(sock, packet)
        finals: list = []

        def enough(data: bytearray, eof: bool) -> bool:
            responses, used = parse_all(bytes(data), eof)
            got = [r for r in responses if r.status >= 200]
            if len(got) >= len(expected):
                finals[:] = got
                del data[:used]
                return True
            return False

        eof = await self.read_until(sock, buf, enough, HANG_TIMEOUT)
        if eof and not finals:
            responses, _ = parse_all(bytes(buf), True)
            finals = [r for r in responses if r.status >= 200]
            self.count(finals)
            raise Failure("valid request unanswered", f"{len(finals)} of {len(expected)} answers, then close")
        self.count(finals)
        for response, exp in zip(finals, expected):
            if response.status != 200 or response.body != exp.answer:
                raise Failure("wrong answer", f"status {response.status}, body {response.body[:100]!r}, "
                                              f"expected 200 {exp.answer!r}")
            self.counters.verified_answers += 1
        if len(finals) > len(expected):
            raise Failure("extra response", f"{len(finals)} answers to {len(expected)} requests")
        if buf:
            raise Failure("extra bytes", repr(bytes(buf[:200])))
        return not any(r.headers.get(b"connection") == b"close" for r in finals)

    async def send_last(self, rng: random.Random, sock, buf: bytearray, steps: list) -> None:
        packet, _ = random_packet(rng, mutated=rng.random() < 0.9)
        ending = rng.choices(["half-close", "close", "reset", "wait", "split"], [70, 10, 10, 2, 8])[0]
        self.counters.inputs += 1
        self.counters.endings[ending] += 1
        if ending == "split":  # the same bytes, in small pieces
            for start in range(0, len(packet), 7):
                steps.append({"send": packet[start:start + 7].decode("latin-1")})
                await self.loop.sock_sendall(sock, packet[start:start + 7])
            ending = "half-close"
        else:
            steps.append({"send": packet.decode("latin-1")})
            await self.loop.sock_sendall(sock, packet)
        if ending in ("close", "reset"):
            if rng.random() < 0.5:
                await asyncio.sleep(0)  # sometimes let the server start on it
            if ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            steps.append({"close": ending})
            return
        if ending == "half-close":
            steps.append({"shutdown": "write"})
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server has already closed (an error answer, then close)
                self.counters.endings["closed by server first"] += 1
        else:
            steps.append({"wait": "server close"})
        await self.read_until(sock, buf, lambda data, eof: False, HANG_TIMEOUT)
        try:
            responses, _ = parse_all(bytes(buf), True)
        except BadResponse as exc:
            raise Failure("bad response", str(exc)) from None
        self.count(responses)

    def count(self, responses: list) -> None:
        for response in responses:
            self.counters.responses += 1
            self.counters.statuses[response.status] += 1

    def record_failure(self, failure: Failure, steps: list) -> None:
        self.counters.failures[failure.kind] += 1
        if len(self.counters.reproducers) < self.max_reproducers:
            path = self.save({"kind": failure.kind, "detail": failure.detail, "connections": [steps]})
            self.counters.reproducers.append(str(path))

    def save(self, record: dict) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"fuzz-failure-{self.seed}-{len(self.counters.reproducers)}-{record['kind'].replace(' ', '_')}.json"
        path.write_text(json.dumps(record, indent=1))
        return path

    async def usage(self) -> dict:
        sock = await self.connect()
        try:
            await self.loop.sock_sendall(sock, b"GET /__usage HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            buf = bytearray()
            await self.read_until(sock, buf, lambda data, eof: False, HANG_TIMEOUT)
            return json.loads(parse_all(bytes(buf), True)[0][0].body)
        finally:
            sock.close()

    async def settled_usage(self, baseline: dict) -> dict:
        """Usage once back to the baseline, or after 15 s (idle connections close within ~2 s)."""
        deadline = self.loop.time() + 15
        while True:
            usage = await self.usage()
            if all(usage[key] <= baseline[key] for key in baseline) or self.loop.time() > deadline:
                return usage
            await asyncio.sleep(0.25)

    async def health_check(self) -> None:
        """A valid request on a fresh connection must be answered (else the server hangs)."""
        sock = await self.connect()
        try:
            await self.loop.sock_sendall(sock, b"POST /health HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok")
            buf = bytearray()
            await self.read_until(sock, buf, lambda data, eof: bool(parse_all(bytes(data), eof)[0]), HANG_TIMEOUT)
            responses, _ = parse_all(bytes(buf), True)
            if not responses or responses[0].body != checksum(b"ok"):
                raise Failure("health check", f"unexpected answer {bytes(buf[:200])!r}")
        finally:
            sock.close()
        self.counters.health_checks += 1


async def fuzz(port: int, seed: int, seconds: float, max_inputs: int, concurrency: int, proc, out_dir: Path,
               progress: bool) -> dict:
    fuzzer = Fuzzer(port, seed, out_dir)
    master = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    crashed: list[str] = []

    def finished() -> bool:
        return fuzzer.stop or time.monotonic() >= deadline or fuzzer.counters.inputs >= max_inputs

    async def worker(index: int) -> None:
        while not finished():
            await fuzzer.run_connection(random.Random(master.getrandbits(64)))

    async def watchdog() -> None:
        last_report = started
        while not finished():
            await asyncio.sleep(HEALTH_INTERVAL)
            if proc.poll() is not None:
                crashed.append(f"server exited with {proc.returncode}")
            else:
                try:
                    await fuzzer.health_check()
                except (Failure, OSError, asyncio.TimeoutError) as exc:
                    crashed.append(f"health check failed: {exc}")
            if crashed:
                fuzzer.counters.failures["crash" if proc.poll() is not None else "server hang"] += 1
                path = fuzzer.save({"kind": "crash", "detail": crashed[0], "connections": list(fuzzer.recent)})
                fuzzer.counters.reproducers.append(str(path))
                fuzzer.stop = True
                return
            if progress and time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                elapsed = last_report - started
                print(f"fuzz: {fuzzer.counters.inputs} inputs, {fuzzer.counters.inputs / elapsed:.0f}/s, "
                      f"failures {dict(fuzzer.counters.failures)}", file=sys.stderr, flush=True)

    baseline = await fuzzer.usage()
    await asyncio.gather(watchdog(), *(worker(i) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    final = await fuzzer.settled_usage(baseline) if not crashed else baseline
    leaks = {key: final[key] - baseline[key] for key in baseline if final[key] > baseline[key]}
    if leaks:
        fuzzer.counters.failures["leak"] += 1
    counters = fuzzer.counters
    return {
        "seed": seed,
        "seconds": round(elapsed, 1),
        "inputs": counters.inputs,
        "inputs_per_second": round(counters.inputs / elapsed, 1),
        "connections": counters.connections,
        "valid_requests": counters.requests,
        "verified_answers": counters.verified_answers,
        "responses": counters.responses,
        "statuses": {str(k): v for k, v in sorted(counters.statuses.items())},
        "endings": dict(counters.endings),
        "health_checks": counters.health_checks,
        "crashes": counters.failures["crash"] + counters.failures["server hang"],
        "hangs": counters.failures["hang"],
        "bad_responses": counters.failures["bad response"],
        "failures": dict(counters.failures),
        "usage": {"baseline": baseline, "end": final},
        "reproducers": counters.reproducers,
        "crash_detail": crashed,
    }


# ---------------------------------------------------------------------- server process
def start_server(port: int, log_path: Path, extra: list[str] = (), app: str = "tests.fuzz:app",
                 options: list[str] = SERVER_OPTIONS) -> subprocess.Popen:
    """A Tether process serving ``app`` on ``port`` (also used by tests/soak.py), once it accepts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tether", app, "--port", str(port), *options, *extra],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tether exited at start: {log_path.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("tether did not start within 20 s")


def stop_server(proc: subprocess.Popen) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def server_log_problems(text: str) -> list[str]:
    """Lines in the server's log that point at a server bug (errors and tracebacks)."""
    return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or "CRITICAL" in line]


def replay(path: Path, port: int, extra: list[str]) -> None:
    """Run a saved reproducer's connections one by one against a fresh server; print what came back."""
    record = json.loads(path.read_text())
    log_path = Path(f"/tmp/tether-fuzz-replay-{port}.log")
    proc = start_server(port, log_path, extra)
    try:
        for index, steps in enumerate(record["connections"]):
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT)
            received = bytearray()
            try:
                for step in steps:
                    if "send" in step:
                        sock.sendall(step["send"].encode("latin-1"))
                    elif step.get("shutdown"):
                        sock.shutdown(socket.SHUT_WR)
                    elif step.get("close") == "reset":
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                if not any("close" in step for step in steps):
                    while chunk := sock.recv(65536):
                        received += chunk
            except OSError as exc:
                received += f"\n<{exc!r}>".encode()
            finally:
                sock.close()
            print(f"--- connection {index}: sent {steps!r}\n    got {bytes(received)!r}")
        print(f"server alive: {proc.poll() is None}; log problems: {server_log_problems(log_path.read_text())}")
    finally:
        stop_server(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to fuzz")
    parser.add_argument("--inputs", type=int, default=10**12, help="stop after this many inputs")
    parser.add_argument("--port", type=int, default=0, help="port for the server (default: a free one)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--connections", type=int, default=48, help="concurrent client connections")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tether-fuzz"), help="where reproducers go")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--server-args", default="", help="more tether options, e.g. '--on-disconnect cancel'")
    parser.add_argument("--replay", type=Path, help="replay a reproducer file instead of fuzzing")
    args = parser.parse_args(argv)
    port = args.port or free_port()
    if args.replay:
        replay(args.replay, port, shlex.split(args.server_args))
        return 0
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 2**32
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"server-{seed}.log"
    proc = start_server(port, log_path, shlex.split(args.server_args))
    try:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        summary = runner(fuzz(port, seed, args.minutes * 60, args.inputs, args.connections, proc, args.out,
                              not args.quiet))
    finally:
        exit_code = stop_server(proc)
    problems = server_log_problems(log_path.read_text())
    summary["server_exit"] = exit_code
    summary["server_log"] = str(log_path)
    summary["server_log_errors"] = len(problems)
    summary["server_log_sample"] = problems[:5]
    print(json.dumps(summary, indent=1))
    ok = summary["crashes"] == 0 and summary["hangs"] == 0 and not summary["failures"] and not problems
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
