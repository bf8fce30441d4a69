"""A short fuzzing run inside the suite (the long one is ``python -m tests.fuzz --minutes N``).

Hypothesis draws requests (tests/fuzz.py's generators and mutations, and free-form soups of
grammar fragments) and sends each on a fresh connection to an in-thread Tether with short
timeouts, then half-closes. Oracle, for every input: the server answers or closes within a
bound, writes only well-formed HTTP/1.1 responses, logs no error, leaves no connection behind,
and still answers a valid request afterwards. Valid pipelines get exactly their checksums.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz
from tests.support.http1 import read_until_closed
from tests.support.server import ROOT, serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)
SERVER = dict(timeout_keep_alive=1, timeout_request_header=2, timeout_request_body=2, timeout_write=2,
              access_log=False, log_level="warning")
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


class ErrorRecords(logging.Handler):
    """Collects tether.error records at ERROR and above: each is a server bug under fuzzing."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server():
    errors = ErrorRecords()
    logger = logging.getLogger("tether.error")
    logger.addHandler(errors)
    try:
        with serve(fuzz.app, **SERVER) as srv:
            srv.errors = errors
            yield srv
    finally:
        logger.removeHandler(errors)


def exchange(port: int, data: bytes, timeout: float = fuzz.HANG_TIMEOUT) -> bytes:
    """Send data, half-close, read to EOF. An AssertionError if the server neither answers nor closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first (an error answer on an early part): read what it said
        received, closed = read_until_closed(sock, max(0.0, deadline - time.monotonic()))
        if closed:
            return received
        raise AssertionError(f"hang: no close within {timeout}s after {data[:200]!r}; got {received[:200]!r}")
    finally:
        sock.close()


def assert_server_healthy(srv) -> None:
    """Still alive and answering; nothing left open; nothing logged as an error."""
    answer = exchange(srv.port, b"POST /health HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok")
    responses, _ = fuzz.parse_all(answer, True)
    assert [(r.status, r.body) for r in responses if r.status >= 200] == [(200, fuzz.checksum(b"ok"))]
    wait_until(lambda: srv.call(lambda: not srv.state.connections and not srv.state.tasks), 5,
               "all connections and tasks closed")
    assert not srv.errors.records, [r.getMessage() for r in srv.errors.records]


def assert_well_formed(data: bytes, answer: bytes) -> list:
    try:
        responses, _ = fuzz.parse_all(answer, True)
    except fuzz.BadResponse as exc:
        raise AssertionError(f"{exc} in answer to {data[:300]!r}") from None
    return responses


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_requests_are_answered_well_formed_or_closed(server, rng: random.Random) -> None:
    data, _ = fuzz.random_packet(rng, mutated=True)
    assert_well_formed(data, exchange(server.port, data))
    assert_server_healthy(server)


FRAGMENTS = [b"GET", b"POST", b"HEAD", b" ", b"/", b"/a?b=c", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n",
             b"\n", b"\r", b"Host: x", b"Content-Length: ", b"Transfer-Encoding: chunked", b"0", b"5", b"-1",
             b"ffffffffffffffff", b"hello", b":", b"\t", b"\x00", b";ext=1", b"Expect: 100-continue",
             b"Connection: close", b"Upgrade: websocket", b"\r\n\r\n", b"0\r\n\r\n"]


@FUZZ
@given(parts=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=6)), max_size=40))
def test_fragment_soups_are_answered_well_formed_or_closed(server, parts: list) -> None:
    data = b"".join(parts)
    assert_well_formed(data, exchange(server.port, data))
    assert_server_healthy(server)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_valid_pipelines_get_exactly_their_checksums(server, rng: random.Random) -> None:
    data, expected = fuzz.random_packet(rng, mutated=False)
    responses = assert_well_formed(data, exchange(server.port, data))
    finals = [(r.status, r.body) for r in responses if r.status >= 200]
    assert finals == [(200, e.answer) for e in expected]


def test_fuzz_runner_finds_no_failure() -> None:
    """The standalone runner, briefly: its own server process, concurrent connections, JSON summary."""
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", "--inputs", "6000", "--minutes", "1", "--seed", "7",
                           "--quiet", "--out", "/tmp/tether-fuzz-test"],
                          cwd=ROOT, capture_output=True, text=True, timeout=100)
    summary = json.loads(proc.stdout)
    assert summary["inputs"] >= 6000
    assert summary["crashes"] == 0 and summary["hangs"] == 0 and summary["bad_responses"] == 0, summary
    assert summary["failures"] == {} and summary["server_log_errors"] == 0, summary
    assert summary["verified_answers"] > 1000 and summary["health_checks"] >= 1, summary
    assert summary["server_exit"] == 0, proc.stderr[-2000:]
    assert proc.returncode == 0


def test_pipelined_head_split_after_a_large_body_is_served(server) -> None:
    """Found by the fuzzer: the end of a large body and the start of the next request's head arrive
    in one read, the rest of the head in a later read. The head-size bound must count only head
    bytes, not the body bytes that shared the read (else: 431 for a 50-byte head)."""
    body = b"x" * 100_000
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                     + b"GET /second HTTP/1.1\r\nHo")
        time.sleep(0.3)  # the server has read all of it by now
        try:
            sock.sendall(b"st: x\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already closed by the server: its answer says why
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    responses, _ = fuzz.parse_all(bytes(received), True)
    assert [(r.status, r.body) for r in responses] == [(200, fuzz.checksum(body)), (200, fuzz.checksum(b""))]
