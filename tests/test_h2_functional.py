"""HTTP/2 end to end with real clients: httpx (prior knowledge and ALPN over TLS), curl, and a
raw-socket client built on the ``h2`` library (``H2Client``, tests/support/h2.py) for what needs
frame-level control (resets, windows, settings, PINGs, GOAWAY).

Every test runs a real Tether on 127.0.0.1 (``serve``). Apps report what they saw through a
``Probe`` (with timestamps), so the per-stream disconnect bounds are checked the same way as in
tests/test_disconnect_states.py: the app learns within 1 s (generous: loopback is microseconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import hyperframe.frame
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

import tether
from tests.support.asgi import read_body
from tests.support.disconnect import WITHIN, assert_prompt
from tests.support.h2 import H2Client
from tests.support.probe import Probe
from tests.support.server import serve, server_idle
from tests.support.tls import Certs

pytestmark = pytest.mark.timeout(90)

TIMEOUT = httpx.Timeout(20.0)
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]}


def payload(size: int, seed: int = 7) -> bytes:
    """Deterministic bytes, so corruption or reordering shows in the digest."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def send_json(send: Any, value: Any, status: int = 200) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def wait_gate(gate: threading.Event, timeout: float = 20.0) -> None:
    """Wait (on the server's loop, without blocking it) until the test opens ``gate``."""
    deadline = time.monotonic() + timeout
    while not gate.is_set():
        assert time.monotonic() < deadline, "the test never opened the gate"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------- a general-purpose app
async def general_app(scope: dict, receive: Any, send: Any) -> None:
    """Routes used by several tests: /scope, /upload, /bytes, /trailers, /file, /headers."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
    if path == "/scope":
        body = await read_body(receive)
        await send_json(send, {
            "http_version": scope["http_version"], "method": scope["method"], "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"), "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "scheme": scope["scheme"], "extensions": sorted(scope.get("extensions", {})),
            "client_port": scope["client"][1], "body": body.decode("latin-1"),
        })
    elif path == "/upload":
        digest, size, chunks = hashlib.sha256(), 0, 0
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            chunks += 1
            if not message.get("more_body", False):
                break
        await send_json(send, {"size": size, "sha256": digest.hexdigest(), "chunks": chunks})
    elif path == "/bytes":
        data = payload(int(query["n"]))
        chunk = int(query.get("chunk", "65536"))
        await read_body(receive)
        await send(START)
        for offset in range(0, len(data), chunk):
            await send({"type": "http.response.body", "body": data[offset:offset + chunk], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        await read_body(receive)
        await send({**START, "trailers": True})
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123"), (b"X-Rows", b"2")]})
    elif path == "/file":
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": query["p"]})
    elif path == "/headers":
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"Connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"proxy-connection", b"close"),
            (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"X-Custom", b"Yes"),
            (b"content-length", b"5"),
        ]})
        await send({"type": "http.response.body", "body": b"hello"})
    else:
        await send_json(send, {"error": "not found"}, status=404)


def h2_client(**kwargs: Any) -> httpx.Client:
    """httpx speaking HTTP/2 with prior knowledge over plain text."""
    return httpx.Client(http1=False, http2=True, timeout=TIMEOUT, **kwargs)


# ---------------------------------------------------------------------- TLS certificates
def test_httpx_prior_knowledge_scope() -> None:
    with serve(general_app, lifespan="off") as srv, h2_client() as client:
        response = client.get(srv.url + "/scope?x=1&y=%20z", headers={"X-Mixed-Case": "Value"})
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        scope = response.json()
        assert scope["http_version"] == "2"
        assert scope["method"] == "GET"
        assert scope["path"] == "/scope"
        assert scope["raw_path"] == "/scope"
        assert scope["query_string"] == "x=1&y=%20z"
        assert scope["scheme"] == "http"
        headers = dict(scope["headers"])
        assert all(name == name.lower() and not name.startswith(":") for name, _ in scope["headers"])
        assert headers["x-mixed-case"] == "Value"
        assert headers["host"] == f"127.0.0.1:{srv.port}"  # from :authority
        assert {"http.response.trailers", "http.response.pathsend", "tether.disconnect"} <= set(scope["extensions"])


def test_scope_percent_encoded_path_and_post_method() -> None:
    with serve(general_app, lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/sc%6Fpe?q=%2F", method="POST", body=b"name=value",
                             headers=((b"content-type", b"application/x-www-form-urlencoded"),))
        result = client.response(sid)
        assert result.status == 200
        scope = json.loads(bytes(result.data))
        assert scope["method"] == "POST"
        assert scope["path"] == "/scope"  # decoded
        assert scope["raw_path"] == "/sc%6Fpe"  # as sent, without the query
        assert scope["query_string"] == "q=%2F"
        assert scope["body"] == "name=value"
        assert scope["http_version"] == "2"


def test_httpx_small_body_and_streamed_1mib_upload() -> None:
    upload = payload(1024 * 1024, seed=1)

    def chunks():
        for offset in range(0, len(upload), 10_000):
            yield upload[offset:offset + 10_000]

    with serve(general_app, lifespan="off") as srv, h2_client() as client:
        small = client.post(srv.url + "/upload", content=b"tiny body")
        assert small.http_version == "HTTP/2"
        assert small.json()["size"] == 9 and small.json()["sha256"] == sha(b"tiny body")
        big = client.post(srv.url + "/upload", content=chunks())  # no content-length: streamed
        assert big.status_code == 200 and big.http_version == "HTTP/2"
        assert big.json()["size"] == len(upload)
        assert big.json()["sha256"] == sha(upload)
        assert big.json()["chunks"] > 1  # the app got it as a stream, not one blob


@pytest.mark.parametrize("size", [64 * 1024, 5 * 1024 * 1024])
def test_httpx_response_bodies(size: int) -> None:
    # 5 MiB is far past the 65,535-byte initial window: it only arrives if send() waits for
    # the client's WINDOW_UPDATEs and resumes.
    with serve(general_app, lifespan="off") as srv, h2_client() as client:
        with client.stream("GET", srv.url + f"/bytes?n={size}&chunk=100000") as response:
            assert response.status_code == 200 and response.http_version == "HTTP/2"
            body = b"".join(response.iter_bytes())
        assert len(body) == size
        assert body == payload(size)


def test_fifty_concurrent_requests_multiplexed_on_one_connection() -> None:
    count = 50
    arrived: list[int] = []
    state: dict = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        if "all_here" not in state:
            state["all_here"] = asyncio.Event()
        arrived.append(scope["client"][1])
        if len(arrived) >= count:
            state["all_here"].set()
        # Every response waits for all 50 requests: only true multiplexing can finish.
        await asyncio.wait_for(state["all_here"].wait(), 20)
        number = scope["path"].rsplit("/", 1)[1]
        await send_json(send, {"n": int(number), "sha": sha(number.encode() * 1000)})

    async def client_side(url: str) -> list:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT) as client:
            return await asyncio.gather(*(client.get(f"{url}/n/{i}") for i in range(count)))

    with serve(app, lifespan="off") as srv:
        responses = asyncio.run(client_side(srv.url))
    assert [r.status_code for r in responses] == [200] * count
    assert all(r.http_version == "HTTP/2" for r in responses)
    assert [r.json()["n"] for r in responses] == list(range(count))
    assert all(r.json()["sha"] == sha(str(i).encode() * 1000) for i, r in enumerate(responses))
    assert len(arrived) == count
    assert len(set(arrived)) == 1, f"expected one connection, the requests came from ports {sorted(set(arrived))}"


def test_trailers_delivered() -> None:
    with serve(general_app, lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/trailers", headers=((b"te", b"trailers"),))
        result = client.response(sid)
        assert result.status == 200
        assert bytes(result.data) == b"part one, part two"
        assert result.trailers is not None, "no trailers received"
        assert dict(result.trailers) == {b"x-checksum": b"abc123", b"x-rows": b"2"}


def test_pathsend_file(tmp_path: Path) -> None:
    content = payload(300_000, seed=3)  # several windows' worth
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with serve(general_app, lifespan="off") as srv, h2_client() as client:
        response = client.get(srv.url + "/file", params={"p": str(path)})
        assert response.status_code == 200 and response.http_version == "HTTP/2"
        assert response.content == content
        assert response.headers["content-length"] == str(len(content))


def test_connection_specific_headers_stripped_and_defaults_added() -> None:
    with serve(general_app, lifespan="off") as srv, H2Client(srv.port) as client:
        result = client.response(client.request("/headers"))
        names = [name for name, _ in result.headers]
        for banned in (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"):
            assert banned not in names, f"{banned!r} was sent over HTTP/2: {result.headers}"
        assert all(name == name.lower() for name in names)
        assert result.header(b"x-custom") == b"Yes"
        assert result.header(b"content-length") == b"5"
        assert result.header(b"server") is not None
        assert result.header(b"date") is not None
        assert bytes(result.data) == b"hello"


def test_server_and_date_headers_via_httpx() -> None:
    with serve(general_app, lifespan="off") as srv, h2_client() as client:
        response = client.get(srv.url + "/scope")
        assert "server" in response.headers and "date" in response.headers
        # An RFC 9110 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
        assert response.headers["date"].endswith(" GMT") and len(response.headers["date"]) == 29


# ====================================================================== TLS + ALPN
def tls_client(certs: Certs, http2: bool = True) -> httpx.Client:
    return httpx.Client(http2=http2, verify=certs.client_context(), timeout=httpx.Timeout(10.0))


def test_httpx_tls_alpn_h2_scope_and_fallback(certs: Certs) -> None:
    upload = payload(200_000, seed=5)
    with serve(general_app, lifespan="off", **certs.server_options()) as srv:
        with tls_client(certs) as client:
            response = client.get(srv.url + "/scope?tls=1")
            assert response.http_version == "HTTP/2"  # chosen by ALPN
            scope = response.json()
            assert scope["http_version"] == "2" and scope["scheme"] == "https"
            assert scope["query_string"] == "tls=1"
            assert dict(scope["headers"])["host"] == f"127.0.0.1:{srv.port}"
            assert "tether.disconnect" in scope["extensions"]
            posted = client.post(srv.url + "/upload", content=upload)
            assert posted.json()["sha256"] == sha(upload)
        # A client that offers only http/1.1 gets it.
        with tls_client(certs, http2=False) as client:
            response = client.get(srv.url + "/scope")
            assert response.http_version == "HTTP/1.1"
            assert response.json()["http_version"] == "1.1"


@pytest.mark.parametrize("chunk", [16384, 100_000])
def test_httpx_tls_streamed_response(certs: Certs, chunk: int) -> None:
    # 2 MiB over TLS in many send() calls: send() must be woken as the TLS transport drains,
    # not only when the client happens to send something (a WINDOW_UPDATE).
    size = 2 * 1024 * 1024
    with serve(general_app, lifespan="off", **certs.server_options()) as srv, tls_client(certs) as client:
        response = client.get(srv.url + f"/bytes?n={size}&chunk={chunk}")
        assert response.http_version == "HTTP/2"
        assert response.content == payload(size)


# ====================================================================== curl
def curl_features() -> str:
    if shutil.which("curl") is None:
        return ""
    return subprocess.run(["curl", "-V"], capture_output=True, text=True, timeout=10).stdout


needs_curl_h2 = pytest.mark.skipif("HTTP2" not in curl_features().split(), reason="curl without HTTP2 support")


def curl(*args: str) -> subprocess.CompletedProcess:
    """curl -sS with a version marker after the body (``-w``): stdout = body + "\\n<version>"."""
    return subprocess.run(["curl", "-sS", "--max-time", "15", "-w", "\\n%{http_version}", *args],
                          capture_output=True, text=True, timeout=30)


def body_and_version(result: subprocess.CompletedProcess) -> tuple[str, str]:
    assert result.returncode == 0, f"curl failed ({result.returncode}): {result.stderr}"
    body, _, version = result.stdout.rpartition("\n")
    return body, version


@needs_curl_h2
def test_curl_prior_knowledge() -> None:
    with serve(general_app, lifespan="off") as srv:
        body, version = body_and_version(curl("--http2-prior-knowledge", srv.url + "/scope?via=curl"))
        assert version == "2"
        scope = json.loads(body)
        assert scope["http_version"] == "2" and scope["query_string"] == "via=curl"
        # 300 kB: past the initial window, so curl's WINDOW_UPDATEs must reach the app's send().
        result = subprocess.run(["curl", "-sS", "--max-time", "15", "--http2-prior-knowledge", "-o", "/dev/null",
                                 "-w", "%{http_version} %{size_download}", srv.url + "/bytes?n=300000"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "2 300000"


@needs_curl_h2
def test_curl_tls_alpn(certs: Certs) -> None:
    with serve(general_app, lifespan="off", **certs.server_options()) as srv:
        body, version = body_and_version(curl("--http2", "--cacert", str(certs.ca_file), srv.url + "/scope"))
        assert version == "2"
        scope = json.loads(body)
        assert scope["http_version"] == "2" and scope["scheme"] == "https"


@needs_curl_h2
def test_curl_h2c_upgrade() -> None:
    with serve(general_app, lifespan="off") as srv:
        result = curl("-v", "--http2", srv.url + "/scope?up=1")
        body, version = body_and_version(result)
        assert "101" in result.stderr, "no 101 Switching Protocols seen"
        assert version == "2"
        scope = json.loads(body)
        assert scope["http_version"] == "2"
        assert scope["path"] == "/scope" and scope["query_string"] == "up=1"
        # The upgrade's own headers belonged to the HTTP/1.1 hop, not to the HTTP/2 request.
        names = {name for name, _ in scope["headers"]}
        assert not names & {"connection", "upgrade", "http2-settings", "keep-alive", "transfer-encoding"}, names
        assert "host" in names and "user-agent" in names


@needs_curl_h2
def test_http1_only_refuses_prior_knowledge_and_ignores_upgrade() -> None:
    with serve(general_app, lifespan="off", http="1") as srv:
        failed = curl("--http2-prior-knowledge", srv.url + "/scope")
        assert failed.returncode != 0, f"prior knowledge was served with http='1': {failed.stdout!r}"
        body, version = body_and_version(curl("--http2", srv.url + "/scope"))
        assert version == "1.1"
        assert json.loads(body)["http_version"] == "1.1"
        # The preface itself is answered 400 by the HTTP/1.1 parser.
        with srv.connect() as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 400")


@needs_curl_h2
def test_http2_only_refuses_plain_http1() -> None:
    with serve(general_app, lifespan="off", http="2") as srv:
        failed = curl("--http1.1", srv.url + "/scope")
        assert failed.returncode != 0, f"HTTP/1.1 was served with http='2': {failed.stdout!r}"
        body, version = body_and_version(curl("--http2-prior-knowledge", srv.url + "/scope"))
        assert version == "2" and json.loads(body)["http_version"] == "2"
        with httpx.Client(timeout=TIMEOUT) as client, pytest.raises(httpx.HTTPError):
            client.get(srv.url + "/scope")


# ====================================================================== per-stream disconnect
def test_reset_while_app_awaits_receive_after_body() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("body")
        probe.mark("disconnect", await receive())

    with serve(app, lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/wait")
        probe.wait("body")
        left = client.reset(sid)
        assert_prompt(probe, "disconnect", left)
        assert probe.value("disconnect") == {"type": "http.disconnect"}
        server_idle(srv)


def test_reset_during_body_upload() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        received = 0
        for _ in range(1000):
            message = await receive()
            if message["type"] == "http.disconnect":
                probe.mark("disconnect", received)
                return
            received += len(message.get("body", b""))
            probe.mark("chunk", received)
            if not message.get("more_body", False):
                probe.mark("complete")
                return

    with serve(app, lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/upload", method="POST", end=False)
        client.send_body(sid, b"x" * 10_000)
        probe.wait("chunk")
        left = client.reset(sid)
        assert_prompt(probe, "disconnect", left)
        assert "complete" not in probe
        server_idle(srv)


def streaming_app(probe: Probe) -> Any:
    """Streams chunks until send() fails; a listener task reports the http.disconnect."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)

        async def listen() -> None:
            message = await receive()
            probe.mark("disconnect", message)

        listener = asyncio.get_running_loop().create_task(listen())
        await send(START)
        try:
            for i in range(1000):  # bounded: 20 s
                await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
                probe.mark("sent")
                await asyncio.sleep(0.02)
            probe.mark("finished")
        except tether.ClientDisconnected as exc:
            probe.mark("send_raised", exc)
        finally:
            await asyncio.wait_for(listener, 5)

    return app


def test_reset_during_streamed_response() -> None:
    probe = Probe()
    with serve(streaming_app(probe), lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/stream")
        client.wait(lambda: len(client.streams[sid].data) >= 30, what="some streamed data")
        left = client.reset(sid)
        assert_prompt(probe, "disconnect", left)
        assert probe.value("disconnect") == {"type": "http.disconnect"}
        assert_prompt(probe, "send_raised", left, within=WITHIN + 0.1)  # the next send(), 20 ms later
        assert "finished" not in probe
        server_idle(srv)


def test_reset_while_send_blocked_on_zero_window_sibling_unaffected() -> None:
    probe = Probe()
    big = payload(64 * 1024)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        if scope["path"] == "/small":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send(START)
        probe.mark("sending")
        try:
            await send({"type": "http.response.body", "body": big, "more_body": True})
            probe.mark("sent")
        except tether.ClientDisconnected as exc:
            probe.mark("raised", exc)
        # Every later send() on the reset stream raises too.
        for _ in range(3):
            try:
                await send({"type": "http.response.body", "body": b"more", "more_body": True})
                probe.mark("later send returned")
            except tether.ClientDisconnected:
                probe.mark("later send raised")

    # The client grants 16 bytes per stream and never sends WINDOW_UPDATE.
    with serve(app, lifespan="off") as srv, H2Client(srv.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 16},
                                                    auto_ack=False) as client:
        client.wait(lambda: client.settings_acked, what="the server's ACK of our SETTINGS")
        sid = client.request("/blocked")
        probe.wait("sending")
        client.wait(lambda: len(client.streams[sid].data) == 16, what="the first 16 bytes (the window)")
        client.pump(0.3)
        assert "sent" not in probe, "send() returned though the client's window was closed"
        assert len(client.streams[sid].data) == 16
        left = client.reset(sid)
        assert_prompt(probe, "raised", left)
        assert isinstance(probe.value("raised"), tether.ClientDisconnected)
        probe.wait_count("later send raised", 3)
        assert "later send returned" not in probe
        # The other stream on the same connection still works.
        other = client.response(client.request("/small"))
        assert other.status == 200 and bytes(other.data) == b"ok"
        server_idle(srv)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_connection_loss_disconnects_every_stream(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("waiting")
        message = await receive()
        probe.mark("disconnect " + scope["path"], message)

    paths = ["/a", "/b", "/c"]
    with serve(app, lifespan="off") as srv:
        client = H2Client(srv.port)
        for path in paths:
            client.request(path)
        probe.wait_count("waiting", len(paths))
        left = client.close(how)
        for path in paths:
            assert_prompt(probe, "disconnect " + path, left)
            assert probe.value("disconnect " + path) == {"type": "http.disconnect"}
        server_idle(srv)


def test_on_disconnect_cancel_per_stream() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        name = scope["path"].strip("/")
        probe.mark("started " + name)
        try:
            await asyncio.sleep(1.5 if name == "sibling" else 20)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": name.encode() + b" done"})
        except asyncio.CancelledError:
            probe.mark("cancelled " + name)
            raise
        finally:
            probe.mark("finally " + name)

    with serve(app, lifespan="off", on_disconnect="cancel") as srv, H2Client(srv.port) as client:
        victim = client.request("/victim")
        sibling = client.request("/sibling")
        probe.wait("started victim")
        probe.wait("started sibling")
        left = client.reset(victim)
        assert_prompt(probe, "cancelled victim", left)
        assert_prompt(probe, "finally victim", left)
        result = client.response(sibling)
        assert result.status == 200 and bytes(result.data) == b"sibling done"
        assert "cancelled sibling" not in probe
        server_idle(srv)


def test_disconnect_extension_per_stream() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        signal = scope["extensions"]["tether.disconnect"]
        await read_body(receive)
        name = scope["path"].strip("/")
        probe.mark("started " + name, signal)
        if name == "victim":
            await asyncio.wait_for(signal.wait(), 20)
            probe.mark("victim signalled", signal.is_set())
            return
        await wait_gate(gate)
        body = json.dumps({"is_set": signal.is_set(), "event_set": signal.event.is_set()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    gate = threading.Event()
    with serve(app, lifespan="off") as srv, H2Client(srv.port) as client:
        victim = client.request("/victim")
        sibling = client.request("/sibling")
        probe.wait("started victim")
        probe.wait("started sibling")
        assert probe.value("started victim") is not probe.value("started sibling")  # one signal per stream
        left = client.reset(victim)
        assert_prompt(probe, "victim signalled", left)
        assert probe.value("victim signalled") is True
        gate.set()
        result = client.response(sibling)
        assert json.loads(bytes(result.data)) == {"is_set": False, "event_set": False}
        server_idle(srv)


# ====================================================================== flow control
def gated_upload_app(probe: Probe, gate: threading.Event) -> Any:
    """Does not read the body until the test opens ``gate``; then answers its size and digest."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        probe.mark("started")
        await wait_gate(gate)
        body = await read_body(receive)
        await send_json(send, {"size": len(body), "sha256": sha(body)})

    return app


@pytest.mark.parametrize("window", [None, 20_000])
def test_upload_held_to_initial_window_until_app_reads(window: int | None) -> None:
    probe, gate = Probe(), threading.Event()
    body = payload(400_000, seed=11)
    options = {} if window is None else {"h2_initial_window_size": window}
    expected_window = window or 65535
    with serve(gated_upload_app(probe, gate), lifespan="off", **options) as srv, H2Client(srv.port) as client:
        client.wait(lambda: client.remote_settings or client.settings_acked, what="the server's SETTINGS")
        client.pump(0.1)
        sid = client.request("/upload", method="POST", end=False)
        probe.wait("started")
        sent = 0
        while client.conn.local_flow_control_window(sid) > 0:  # send all the window allows
            size = min(client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size)
            client.conn.send_data(sid, body[sent:sent + size])
            client.flush()
            sent += size
        assert sent == expected_window, f"the server granted {sent} bytes before the app read, not {expected_window}"
        # While the app does not read, no WINDOW_UPDATE comes: the window stays shut.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            client.pump(0.05)
            assert client.conn.local_flow_control_window(sid) == 0, "window reopened before the app read"
        gate.set()
        rest = body[sent:]
        client.upload(sid, rest)
        result = client.response(sid)
        assert json.loads(bytes(result.data)) == {"size": len(body), "sha256": sha(body)}


# ====================================================================== settings
def test_settings_advertised() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send_json(send, {})

    with serve(app, lifespan="off", h2_max_concurrent_streams=3, h2_initial_window_size=100_000,
               h2_max_frame_size=32768, h2_max_header_list_size=20000) as srv, H2Client(srv.port) as client:
        client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.remote_settings, what="server SETTINGS")
        assert client.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 3
        assert client.remote_settings[SettingCodes.INITIAL_WINDOW_SIZE] == 100_000
        assert client.remote_settings[SettingCodes.MAX_FRAME_SIZE] == 32768
        assert client.remote_settings[SettingCodes.MAX_HEADER_LIST_SIZE] == 20000


def test_default_settings_advertised() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send_json(send, {})

    with serve(app, lifespan="off") as srv, H2Client(srv.port) as client:
        client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.remote_settings, what="server SETTINGS")
        assert client.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
        assert client.remote_settings.get(SettingCodes.INITIAL_WINDOW_SIZE, 65535) == 65535
        assert client.remote_settings.get(SettingCodes.MAX_FRAME_SIZE, 16384) == 16384


def test_larger_max_frame_size_accepted_from_client() -> None:
    # With h2_max_frame_size=32768 the client may send 32 KiB DATA frames; they arrive intact.
    body = payload(300_000, seed=13)
    with serve(general_app, lifespan="off", h2_max_frame_size=32768) as srv, H2Client(srv.port) as client:
        client.wait(lambda: SettingCodes.MAX_FRAME_SIZE in client.remote_settings, what="server SETTINGS")
        assert client.conn.max_outbound_frame_size == 32768
        sid = client.request("/upload", method="POST", end=False)
        client.upload(sid, body)
        result = json.loads(bytes(client.response(sid).data))
        assert result["size"] == len(body) and result["sha256"] == sha(body)


def test_stream_past_max_concurrent_streams_refused() -> None:
    probe, gate = Probe(), threading.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        await wait_gate(gate)
        await send_json(send, {"path": scope["path"]})

    with serve(app, lifespan="off", h2_max_concurrent_streams=3) as srv, H2Client(srv.port) as client:
        client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.remote_settings, what="server SETTINGS")
        # The client's own h2 would refuse to open a 4th stream: lift its limit to test the server.
        client.conn.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 100
        client.conn.remote_settings.acknowledge()  # (h2 applies a value once acknowledged)
        first = [client.request(f"/s{i}") for i in range(3)]
        probe.wait_count("started", 3)
        fourth = client.request("/s3")
        client.wait(lambda: client.streams[fourth].reset is not None, what="the 4th stream's RST_STREAM")
        assert client.streams[fourth].reset == ErrorCodes.REFUSED_STREAM
        assert probe.count("started") == 3  # the app never saw the refused stream
        gate.set()
        for i, sid in enumerate(first):
            assert json.loads(bytes(client.response(sid).data)) == {"path": f"/s{i}"}
        # The connection lives on: a new stream is served.
        again = client.request("/again")
        assert json.loads(bytes(client.response(again).data)) == {"path": "/again"}
        assert client.goaway is None and not client.eof


# ====================================================================== PING keep-alive
def test_pings_sent_and_answered_connection_lives() -> None:
    gate = threading.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        await wait_gate(gate)
        await send_json(send, {"disconnected": scope["extensions"]["tether.disconnect"].is_set()})

    with serve(app, lifespan="off", h2_ping_interval=0.5, h2_ping_timeout=0.5) as srv, H2Client(srv.port) as client:
        sid = client.request("/long")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # h2 ACKs every PING as it is processed
            client.pump(0.05)
        assert client.pings >= 2, f"only {client.pings} PINGs in 2.5 s with h2_ping_interval=0.5"
        assert not client.eof and client.goaway is None
        gate.set()
        assert json.loads(bytes(client.response(sid).data)) == {"disconnected": False}


def test_unanswered_ping_closes_connection_and_disconnects_stream() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("waiting")
        probe.mark("disconnect", await receive())

    with serve(app, lifespan="off", h2_ping_interval=0.5, h2_ping_timeout=0.5) as srv, H2Client(srv.port) as client:
        client.request("/long")
        probe.wait("waiting")
        client.deaf = True  # reads and discards: no PING ACK will ever be sent
        started = time.monotonic()
        client.wait(lambda: client.eof, timeout=10, what="the server closing the connection")
        pings = [f for f in client.frames if isinstance(f, hyperframe.frame.PingFrame) and "ACK" not in f.flags]
        assert pings, "the server closed the connection without having sent a PING"
        probe.wait("disconnect", timeout=5)
        assert probe.value("disconnect") == {"type": "http.disconnect"}
        assert probe.times["disconnect"] - started < 5.0  # interval + timeout = 1 s; generous bound
        server_idle(srv)


# ====================================================================== graceful shutdown
def test_graceful_shutdown_goaway_then_in_flight_stream_completes() -> None:
    probe, gate = Probe(), threading.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        await wait_gate(gate)
        await send(START)
        await send({"type": "http.response.body", "body": b"first part, ", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"finished"})
        probe.mark("done")

    with serve(app, lifespan="off", timeout_graceful_shutdown=10) as srv, H2Client(srv.port) as client:
        sid = client.request("/slow")
        probe.wait("started")
        srv.loop.call_soon_threadsafe(srv.server.request_exit)
        client.wait(lambda: client.goaway, timeout=10, what="GOAWAY")
        assert client.goaway.error_code == ErrorCodes.NO_ERROR
        assert client.goaway.last_stream_id >= sid, "the in-flight stream is not covered by GOAWAY"
        assert not client.eof, "closed before the in-flight stream finished"
        goaway_at = len(client.frames)
        gate.set()
        client.wait(lambda: client.eof, timeout=10, what="the connection closing after the response")
        after = client.frames[goaway_at:]
        headers = [f for f in after if isinstance(f, hyperframe.frame.HeadersFrame) and f.stream_id == sid]
        data = [f for f in after if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == sid]
        assert len(headers) == 1, f"response HEADERS after GOAWAY: {after}"
        assert dict(client.conn.decoder.decode(headers[0].data, raw=True))[b":status"] == b"200"
        assert b"".join(f.data for f in data) == b"first part, finished"
        assert "END_STREAM" in data[-1].flags
        assert "done" in probe
