"""Real frameworks run unmodified on Tether: Starlette, FastAPI and Django (ASGI).

Each app in tests/apps/frameworks/ is written as the framework's own docs teach; nothing in it
knows about Tether. Every framework is served by the in-process harness (``serve``) for the
detailed checks, and once through the CLI (``python -m tether module:app``) end to end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httptools
import httpx
import pytest

from tether.lifespan import LifespanFailed

from tests.support.server import ROOT, cli_server, serve
from tests.support.waiting import wait_until

FRAMEWORKS = ["starlette", "fastapi", "django"]
DJANGO_SETTINGS = "tests.apps.frameworks.django_site.settings"
TIMEOUT = httpx.Timeout(10.0)
UPLOAD = random.Random(1234).randbytes(2 * 1024 * 1024)  # 2 MiB, the same bytes every run
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
ROOT_TEXT = {"starlette": "starlette root", "fastapi": "fastapi root", "django": "django root"}


def _has_multipart() -> bool:
    from tests.apps.frameworks import starlette_app
    return starlette_app.HAS_MULTIPART


needs_multipart = pytest.mark.skipif(
    not _has_multipart(), reason="python-multipart is not installed (Starlette/FastAPI form parsing needs it)"
)


def django_application():
    current = os.environ.setdefault("DJANGO_SETTINGS_MODULE", DJANGO_SETTINGS)
    assert current == DJANGO_SETTINGS, f"DJANGO_SETTINGS_MODULE is already {current!r} in this process"
    from tests.apps.frameworks.django_site.asgi import application
    return application


def make_app(name: str, marker: str | None = None):
    if name == "starlette":
        from tests.apps.frameworks.starlette_app import create_app
        return create_app(marker)
    if name == "fastapi":
        from tests.apps.frameworks.fastapi_app import create_app
        return create_app(marker)
    return django_application()


class Servers:
    """One in-process Tether per framework, started on first use, stopped at module end."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.running: dict = {}

    def __getitem__(self, name: str):
        if name not in self.running:
            self.running[name] = self.stack.enter_context(serve(make_app(name), access_log=False))
        return self.running[name]


@pytest.fixture(scope="module")
def servers():
    with contextlib.ExitStack() as stack:
        yield Servers(stack)


@pytest.fixture
def client_for(servers):
    clients: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        client = httpx.Client(base_url=servers[name].url, timeout=TIMEOUT)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def expected_lines(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


# ---------------------------------------------------------------------- common to all three
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_routing_and_404(client_for, name):
    client = client_for(name)
    root = client.get("/")
    assert root.status_code == 200
    assert root.text == ROOT_TEXT[name]
    about = client.get("/about")
    assert about.status_code == 200
    assert "about" in about.text and name in about.text
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert client.get("/").text == ROOT_TEXT[name]  # and the connection still serves


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_path_and_query_parameters(client_for, name):
    client = client_for(name)
    response = client.get("/items/42", params={"q": "hello world/ü&="})
    assert response.status_code == 200
    data = response.json()
    assert data["item_id"] == 42  # converted to int by the framework
    assert data["q"] == "hello world/ü&="
    assert client.get("/items/7").json()["q"] is None
    # Not an int: the framework's converter refuses it (FastAPI answers with validation error).
    assert client.get("/items/abc").status_code == (422 if name == "fastapi" else 404)


@pytest.mark.parametrize("name", ["starlette", "django"])
def test_repeated_query_parameters(client_for, name):
    client = client_for(name)
    path = "/items/1" if name == "starlette" else "/sync"
    data = client.get(path, params=[("tag", "a"), ("tag", "b b"), ("q", "x")]).json()
    assert data["tags"] == ["a", "b b"]
    assert data["q"] == "x"


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_json_request_and_response(client_for, name):
    client = client_for(name)
    payload = {"text": "héllo ✓", "numbers": [1, 2.5, -3], "nested": {"ok": True, "none": None}}
    response = client.post("/echo", json=payload)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {"echo": payload}


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_streaming_response_whole_body(client_for, name):
    client = client_for(name)
    n = 5000
    with client.stream("GET", "/stream", params={"n": n}) as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        pieces = list(response.iter_bytes())
    body = b"".join(pieces).decode()
    assert body == expected_lines(n)
    assert client.get("/").text == ROOT_TEXT[name]  # the chunked body ended cleanly: keep-alive works


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_large_upload_read_by_request_body(client_for, name):
    client = client_for(name)
    response = client.post("/upload", content=UPLOAD, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"size": len(UPLOAD), "sha256": UPLOAD_SHA}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_large_upload_with_expect_100_continue_from_curl(servers, tmp_path, name):
    # curl waits for "100 Continue" before sending the body: Tether sends it when the
    # framework first calls receive(), so the framework's request.body() gets the whole upload.
    upload = tmp_path / "upload.bin"
    upload.write_bytes(UPLOAD)
    result = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "--expect100-timeout", "8", "-H", "Expect: 100-continue",
         "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{upload}",
         "-w", "\n%{http_code}", f"{servers[name].url}/upload"],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout[:300]
    assert json.loads(body) == {"size": len(UPLOAD), "sha256": UPLOAD_SHA}
    assert "< HTTP/1.1 100 Continue" in result.stderr  # the body waited for the interim answer


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
def test_large_chunked_upload_read_by_request_body(client_for, name):
    def pieces():
        view = memoryview(UPLOAD)
        for start in range(0, len(UPLOAD), 100_000):
            yield bytes(view[start:start + 100_000])

    client = client_for(name)
    response = client.post("/upload", content=pieces(), headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"size": len(UPLOAD), "sha256": UPLOAD_SHA}


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_exception_in_route_gives_500_and_next_request_works(client_for, name):
    client = client_for(name)
    paths = ["/boom", "/aboom"] if name == "django" else ["/boom"]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 500
        assert int(response.headers["content-length"]) == len(response.content)
        # The same keep-alive connection (or a new one) still serves.
        again = client.get("/")
        assert again.status_code == 200 and again.text == ROOT_TEXT[name]
    assert client.post("/echo", json={"after": "boom"}).json() == {"echo": {"after": "boom"}}


class _LlhttpResponse:
    """Parse one response with llhttp (httptools): the parser Node.js's http and fetch use."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _raw_get(port: int, target: str) -> tuple[bytes, _LlhttpResponse]:
    """GET over a raw socket; return the response head as sent and the llhttp parse of it."""
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n".encode()
    response = _LlhttpResponse()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        for _ in range(1000):
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the response was complete"
            data += chunk
            if b"\r\n\r\n" in data:
                break
        head = data.split(b"\r\n\r\n", 1)[0]
        try:
            response.parser.feed_data(data)
            for _ in range(1000):
                if response.complete:
                    break
                chunk = sock.recv(65536)
                assert chunk, "connection closed before the response was complete"
                response.parser.feed_data(chunk)
        except httptools.HttpParserError as exc:
            raise AssertionError(f"llhttp rejects the response ({exc}); head as sent:\n{head.decode()}") from None
    return head, response


@pytest.mark.parametrize("name, target", [
    ("starlette", "/items/1"), ("starlette", "/"), ("fastapi", "/items/2?q=x"), ("django", "/"), ("django", "/items/5"),
])
def test_framework_content_length_sent_once_and_strict_parser_accepts(servers, name, target):
    # All three frameworks set Content-Length themselves; the wire must carry it exactly once
    # (llhttp, the parser of Node's http/fetch, rejects "Duplicate Content-Length").
    head, response = _raw_get(servers[name].port, target)
    lengths = [line for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"content-length:")]
    assert len(lengths) == 1, head.decode()
    assert response.complete
    assert dict(response.headers)[b"content-length"] == str(len(response.body)).encode()


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_head_request_has_length_but_no_body(client_for, name):
    client = client_for(name)
    get = client.get("/")
    head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(ROOT_TEXT[name]))
    assert client.get("/").text == ROOT_TEXT[name]  # nothing stray left on the keep-alive connection


def test_starlette_file_response_whole_range_and_head(client_for):
    from tests.apps.frameworks import starlette_app

    source = Path(starlette_app.__file__).read_bytes()
    client = client_for("starlette")
    whole = client.get("/file")
    assert whole.status_code == 200
    assert whole.content == source
    assert whole.headers["content-length"] == str(len(source))
    part = client.get("/file", headers={"range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.content == source[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(source)}"
    head = client.head("/file")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(source))
    assert client.get("/file").content == source


def test_starlette_background_task_runs_after_response(client_for):
    from tests.apps.frameworks.starlette_app import EVENTS

    key = f"bg-{time.monotonic_ns()}"
    response = client_for("starlette").get("/background", params={"key": key})
    assert response.status_code == 200 and response.text == "accepted"
    wait_until(lambda: EVENTS.get(key) == "background done", 3.0, lambda: f"background done (now {EVENTS.get(key)!r})")


# ---------------------------------------------------------------------- forms
def test_starlette_urlencoded_form(client_for):
    if not _has_multipart():
        pytest.skip("Starlette's request.form() needs python-multipart, even for urlencoded bodies")
    response = client_for("starlette").post("/form", data={"name": "Ada Lovelace", "lang": "py & c"})
    assert response.status_code == 200
    assert response.json() == {"name": "Ada Lovelace", "lang": "py & c"}


@needs_multipart
def test_starlette_multipart_form_with_file(client_for):
    content = random.Random(5).randbytes(300_000)
    response = client_for("starlette").post(
        "/form", data={"title": "report"}, files={"doc": ("report.bin", content, "application/octet-stream")}
    )
    assert response.status_code == 200
    assert response.json() == {
        "title": "report",
        "doc": {"filename": "report.bin", "size": len(content), "sha256": hashlib.sha256(content).hexdigest()},
    }


@needs_multipart
def test_fastapi_urlencoded_and_multipart_forms(client_for):
    client = client_for("fastapi")
    response = client.post("/form", data={"name": "Grace", "age": "85"})
    assert response.status_code == 200
    assert response.json() == {"name": "Grace", "age": 85}
    assert client.post("/form", data={"name": "Grace", "age": "old"}).status_code == 422
    content = random.Random(6).randbytes(200_000)
    response = client.post("/files", data={"note": "n1"}, files={"doc": ("a.bin", content, "application/octet-stream")})
    assert response.status_code == 200
    assert response.json() == {"note": "n1", "filename": "a.bin", "size": len(content),
                               "sha256": hashlib.sha256(content).hexdigest()}


def test_django_request_post_urlencoded_and_multipart(client_for):
    client = client_for("django")
    response = client.post("/form", data={"name": "Linus", "tag": ["a", "b"]})
    assert response.status_code == 200
    assert response.json() == {"post": {"name": ["Linus"], "tag": ["a", "b"]}, "files": {}}
    content = random.Random(7).randbytes(150_000)
    response = client.post("/form", data={"name": "x"}, files={"doc": ("d.bin", content, "application/octet-stream")})
    assert response.status_code == 200
    assert response.json() == {
        "post": {"name": ["x"]},
        "files": {"doc": {"filename": "d.bin", "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}},
    }


# ---------------------------------------------------------------------- lifespan
@pytest.mark.parametrize("name", ["starlette", "fastapi"])
def test_lifespan_state_reaches_routes(client_for, name):
    data = client_for(name).get("/state").json()
    assert data["greeting"].startswith("hello from")
    assert data["started_by"] == f"{name}-lifespan"


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
def test_lifespan_shutdown_runs_when_server_stops(tmp_path, name):
    marker = tmp_path / "shutdown"
    with serve(make_app(name, str(marker)), access_log=False) as srv:
        with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as client:
            assert client.get("/state").json()["started_by"] == f"{name}-lifespan"
        assert not marker.exists()  # shutdown has not run while serving
    assert marker.read_text() == f"{name} shutdown"


def test_django_refuses_lifespan_auto_carries_on_and_on_fails_clearly(caplog):
    # Django's ASGIHandler refuses the lifespan scope (ValueError). --lifespan auto (the default)
    # notes it and serves; --lifespan on makes that a startup failure naming the cause.
    app = django_application()
    caplog.set_level(logging.INFO, logger="tether.error")
    with serve(app, lifespan="auto", access_log=False) as srv:
        assert httpx.get(srv.url + "/", timeout=TIMEOUT).text == ROOT_TEXT["django"]
    assert any("lifespan" in r.getMessage() and "unsupported" in r.getMessage() for r in caplog.records)
    with pytest.raises(LifespanFailed, match="Django can only handle ASGI/HTTP connections"):
        with serve(app, lifespan="on", access_log=False):
            pass


# ---------------------------------------------------------------------- FastAPI specifics
def test_fastapi_dependency_and_response_model(client_for):
    client = client_for("fastapi")
    user = client.get("/users/7", headers={"x-token": "secret-token"})
    assert user.status_code == 200
    assert user.json() == {"id": 7, "name": "user7"}  # the response model dropped "password"
    assert client.get("/users/7").status_code == 401  # the dependency refused
    assert client.get("/users/7", headers={"x-token": "nope"}).json() == {"detail": "bad token"}
    page = client.get("/items/5", params={"offset": 3, "limit": 500}).json()
    assert page == {"item_id": 5, "q": None, "offset": 3, "limit": 50}


def test_fastapi_body_model_validation_and_sync_route(client_for):
    client = client_for("fastapi")
    response = client.post("/items", json={"name": "pen", "price": "1.5"})
    assert response.status_code == 200
    assert response.json() == {"name": "pen", "price": 1.5, "tags": []}
    invalid = client.post("/items", json={"name": "pen"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "price"]
    bad_json = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422
    assert client.get("/about").json() == {"about": "fastapi"}  # sync def route, thread pool


# ---------------------------------------------------------------------- Django specifics
def test_django_sync_and_async_views(client_for):
    client = client_for("django")
    sync = client.get("/sync", params={"q": "s"})
    assert sync.status_code == 200
    assert sync.json() == {"kind": "sync", "on_main_thread": False, "q": "s", "tags": []}
    asyn = client.get("/async", params=[("q", "a"), ("tag", "t1"), ("tag", "t2")])
    assert asyn.status_code == 200
    assert asyn.json() == {"kind": "async", "q": "a", "tags": ["t1", "t2"]}
    assert asyn.headers["content-type"] == "application/json"


def test_django_rejects_unknown_host_and_wrong_method(servers):
    with httpx.Client(base_url=servers["django"].url, timeout=TIMEOUT) as client:
        assert client.get("/", headers={"host": "evil.example"}).status_code == 400
        assert client.get("/echo").status_code == 405  # require_POST
        assert client.get("/").status_code == 200


# ---------------------------------------------------------------------- the client leaving
def _send_and_close(url_port: int, request: bytes, before_close) -> None:
    sock = socket.create_connection(("127.0.0.1", url_port), timeout=5)
    try:
        sock.sendall(request)
        before_close(sock)
    finally:
        sock.close()


def test_starlette_streaming_generator_closed_when_client_leaves(servers):
    from tests.apps.frameworks.starlette_app import EVENTS

    srv = servers["starlette"]
    key = f"endless-{time.monotonic_ns()}"

    def read_some(sock: socket.socket) -> None:
        data = b""
        while b"tick 2" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            assert chunk, "server closed the stream early"
            data += chunk
        assert EVENTS.get(key) == "started"

    _send_and_close(srv.port, f"GET /endless?key={key} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), read_some)
    wait_until(lambda: EVENTS.get(key) == "generator closed", 2.0,
               lambda: f"generator closed (now {EVENTS.get(key)!r})")


def test_django_async_view_cancelled_when_client_leaves(servers):
    from tests.apps.frameworks.django_site.views import EVENTS

    srv = servers["django"]
    key = f"slow-{time.monotonic_ns()}"

    def wait_started(sock: socket.socket) -> None:
        wait_until(lambda: EVENTS.get(key) == "started", 5.0, "the view started")

    _send_and_close(srv.port, f"GET /slow?key={key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), wait_started)
    # Django cancels the view when receive() reports http.disconnect.
    wait_until(lambda: EVENTS.get(key) == "cancelled", 2.0, lambda: f"cancelled (now {EVENTS.get(key)!r})")


# ---------------------------------------------------------------------- through the CLI
def _cli_output(proc) -> str:
    try:
        return proc.stdout.read() if proc.stdout else ""
    except ValueError:
        return ""


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
def test_cli_serves_starlette_and_fastapi(tmp_path, name):
    marker = tmp_path / "shutdown"
    target = f"tests.apps.frameworks.{name}_app:app"
    with cli_server(target, "--no-access-log", env={"FRAMEWORK_SHUTDOWN_MARKER": str(marker)}, cwd=ROOT) as (proc, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.get("/").text == ROOT_TEXT[name]
            assert client.get("/nope").status_code == 404
            item = client.get("/items/9", params={"q": "cli"}).json()
            assert (item["item_id"], item["q"]) == (9, "cli")
            assert client.post("/echo", json={"k": [1, "v"]}).json() == {"echo": {"k": [1, "v"]}}
            assert client.get("/stream", params={"n": 3000}).text == expected_lines(3000)
            assert client.post("/upload", content=UPLOAD).json() == {"size": len(UPLOAD), "sha256": UPLOAD_SHA}
            assert client.get("/state").json()["started_by"] == f"{name}-lifespan"
            assert client.get("/boom").status_code == 500
            assert client.get("/").status_code == 200
            if name == "fastapi":
                user = client.get("/users/3", headers={"x-token": "secret-token"}).json()
                assert user == {"id": 3, "name": "user3"}
        assert not marker.exists()
    output = _cli_output(proc)
    assert proc.returncode == 0, output
    assert marker.exists() and marker.read_text() == f"{name} shutdown", output
    assert "boom from a" in output  # the route's exception was logged by Tether


def test_cli_serves_django(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS}
    with cli_server("tests.apps.frameworks.django_site.asgi:application", "--no-access-log", env=env, cwd=ROOT) as (proc, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.get("/").text == ROOT_TEXT["django"]
            assert client.get("/about").text == "about django"
            assert client.get("/nope").status_code == 404
            assert client.get("/items/12", params={"q": "d"}).json() == {"item_id": 12, "q": "d"}
            assert client.get("/sync", params={"q": "1"}).json()["kind"] == "sync"
            assert client.get("/async", params={"q": "2"}).json()["q"] == "2"
            assert client.post("/echo", json={"a": 1}).json() == {"echo": {"a": 1}}
            assert client.post("/form", data={"f": "v"}).json() == {"post": {"f": ["v"]}, "files": {}}
            assert client.get("/stream", params={"n": 3000}).text == expected_lines(3000)
            assert client.post("/upload", content=UPLOAD).json() == {"size": len(UPLOAD), "sha256": UPLOAD_SHA}
            assert client.get("/boom").status_code == 500
            assert client.get("/").status_code == 200
    output = _cli_output(proc)
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output  # Django handles its own errors; lifespan refusal is not one
