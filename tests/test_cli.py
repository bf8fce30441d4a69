"""The command line, run for real: `python -m tether` / `tether` subprocesses and real clients."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.support.http1 import raw_header_lines, raw_request
from tests.support.process import assert_one_error_line, console_script, run_cli, running
from tests.support.waiting import free_port, wait_until
from tether import __version__
from tether.cli import cli
from tether.config import Config

pytestmark = pytest.mark.timeout(60)


def get_json(url: str, **kwargs) -> dict:
    response = httpx.get(url, timeout=5, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------- entry points
@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_version(how):
    result = run_cli("--version", command=console_script() if how == "console script" else None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tether {__version__}"


def test_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Usage: tether [OPTIONS] [APP]" in text
    for param in cli.params:
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{opt} missing from --help"
    # Every Config field is reachable from the command line (CLI and API cannot drift apart).
    option_names = {param.name for param in cli.params}
    for name in Config.__dataclass_fields__:
        assert name in option_names, f"Config.{name} has no CLI option"


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_no_app_serves_the_demo(how):
    with running(command=console_script() if how == "console script" else None) as srv:
        response = httpx.get(srv.url + "/", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "Tether" in response.text
        assert httpx.get(srv.url + "/nope", timeout=5).status_code == 404


def test_module_app():
    with running("simple_apps:hello") as srv:
        response = httpx.get(srv.url + "/", timeout=5)
        assert (response.status_code, response.text) == (200, "hello, world")


def test_factory():
    with running("edge_apps:make_app", "--factory") as srv:
        assert httpx.get(srv.url, timeout=5).text == "made by the factory"


def test_factory_flag_missing_is_an_error():
    # Without --factory the factory itself is treated as the app: a plain function of no
    # arguments is not an ASGI 3 app, which must be reported as one line, not served.
    result = run_cli("simple_apps:factory", "--port", str(free_port()))
    assert_one_error_line(result)


def test_app_dir(tmp_path):
    app_dir = tmp_path / "elsewhere"
    app_dir.mkdir()
    (app_dir / "my_tmp_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'from the app dir'})\n"
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with running("my_tmp_app:app", "--app-dir", str(app_dir), cwd=cwd) as srv:
        assert httpx.get(srv.url, timeout=5).text == "from the app dir"
    # Without --app-dir the module is not found: one readable line.
    result = run_cli("my_tmp_app:app", "--port", str(free_port()), cwd=cwd)
    assert_one_error_line(result, "my_tmp_app")


# ---------------------------------------------------------------------- bad input
BAD_INPUT = {
    "unknown option": (["--no-such-option"], ["--no-such-option"]),
    "bad --loop": (["--loop", "tokio"], ["--loop", "tokio"]),
    "bad --lifespan": (["--lifespan", "maybe"], ["--lifespan"]),
    "bad --port type": (["--port", "eighty"], ["--port"]),
    "port out of range": (["--port", "70000"], ["--port"]),
    "zero workers": (["--workers", "0"], ["--workers"]),
    "unimportable module": (["no_such_module_xyz:app"], ["no_such_module_xyz"]),
    "module raises on import": (["edge_broken:app"], ["edge_broken", "broken on purpose"]),
    "missing attribute": (["simple_apps:no_such_app"], ["no_such_app"]),
    "app without attribute": (["simple_apps"], ["module:attribute"]),
    "bad --header": (["--header", "no-colon-here"], ["--header", "no-colon-here"]),
    "--header name not a token": (["--header", "x y: 1"], ["--header", "token"]),
    "--ssl-keyfile without cert": (["--ssl-keyfile", "/nonexistent/key.pem"], ["--ssl-keyfile", "--ssl-certfile"]),
    "missing cert file": (["--ssl-certfile", "/nonexistent/cert.pem"], ["TLS"]),
    "bad --access-log-format": (["--access-log-format", "{nope}"], ["--access-log-format"]),
    "bad --forwarded-allow-ips": (["--forwarded-allow-ips", "not-an-ip"], ["--forwarded-allow-ips"]),
    "bad --log-config": (["--log-config", "/nonexistent/logging.json"], ["--log-config"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line(case):
    args, fragments = BAD_INPUT[case]
    if "--port" not in args:
        args = [*args, "--port", str(free_port())]
    assert_one_error_line(run_cli(*args), *fragments)


def test_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_error_line(run_cli("simple_apps:hello", "--port", str(port)), str(port), "in use")
        # The same with a supervisor (it binds before forking).
        assert_one_error_line(run_cli("simple_apps:hello", "--workers", "2", "--port", str(port)), "in use")


def test_bad_env_value_is_one_line():
    assert_one_error_line(run_cli(env={"TETHER_LOOP": "tokio", "TETHER_PORT": str(free_port())}), "tokio")


# ---------------------------------------------------------------------- environment variables
def test_env_vars_act_like_options():
    port = free_port()
    env = {
        "TETHER_PORT": str(port),
        "TETHER_HEADER": "x-from-env:yes",
        "TETHER_SERVER_HEADER": "false",
        "TETHER_ROOT_PATH": "/mounted",
        "TETHER_ACCESS_LOG_FORMAT": "ENVFMT {method} {path} {status}",
    }
    with running("edge_apps:info", port=port, env=env) as srv:
        response = httpx.get(f"http://127.0.0.1:{port}/x", timeout=5)
        assert response.status_code == 200
        assert response.headers["x-from-env"] == "yes"
        assert "server" not in response.headers
        assert response.json()["root_path"] == "/mounted"
        srv.wait_for("ENVFMT GET /mounted/x 200")


def test_env_log_level_and_access_log():
    port = free_port()
    env = {"TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning", "TETHER_ACCESS_LOG": "0"}
    with running("simple_apps:hello", port=port, env=env, ready=0) as srv:
        srv.wait_serving(port)
        for _ in range(3):
            assert raw_request(port)[0] == 200
        time.sleep(0.3)
        out = srv.output()
        assert "Tether running on" not in out  # info hidden by TETHER_LOG_LEVEL=warning
        assert '"GET / HTTP/1.1" 200' not in out


def test_option_beats_env():
    port = free_port()
    with running("simple_apps:hello", "--header", "x-which:option", port=port,
                 env={"TETHER_PORT": str(port), "TETHER_HEADER": "x-which:env"}) as srv:
        assert httpx.get(srv.url, timeout=5).headers["x-which"] == "option"


# ---------------------------------------------------------------------- sockets
def test_host_is_honoured():
    port = free_port()
    with running("edge_apps:info", "--host", "127.0.0.2", "--port", str(port), port=False) as srv:
        assert "http://127.0.0.2:%d" % port in srv.output()
        status, _, body = raw_request(port, host="127.0.0.2")
        assert status == 200 and json.loads(body)["server"] == ["127.0.0.2", port]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_ipv6_host():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port()
    with running("edge_apps:info", "--host", "::1", "--port", str(port), port=False) as srv:
        assert f"http://[::1]:{port}" in srv.output()
        status, _, body = raw_request(port, family=socket.AF_INET6, address=("::1", port))
        assert status == 200 and json.loads(body)["client"][0] == "::1"


def test_uds(tmp_path):
    path = str(tmp_path / "tether.sock")
    with running("edge_apps:info", "--uds", path, port=False) as srv:
        assert f"unix:{path}" in srv.output()
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, timeout=5) as client:
            response = client.get("http://localhost/via-uds")
        assert response.status_code == 200 and response.json()["path"] == "/via-uds"
        status, _, body = raw_request(0, path="/raw", family=socket.AF_UNIX, address=path)
        assert status == 200 and json.loads(body)["path"] == "/raw"
        assert srv.stop() == 0
    assert not os.path.exists(path), "the socket file is removed on shutdown"


def test_uds_replaces_a_stale_socket(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # leaves the file behind, like a crashed server
    with running("simple_apps:hello", "--uds", path, port=False):
        status, _, body = raw_request(0, family=socket.AF_UNIX, address=path)
        assert (status, body) == (200, b"hello, world")


def test_fd():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        fd = sock.fileno()
        with running("edge_apps:info", "--fd", str(fd), port=False, pass_fds=[fd]) as srv:
            sock.close()  # the server has its own copy of the descriptor
            status, _, body = raw_request(port, path="/fd")
            assert status == 200 and json.loads(body)["path"] == "/fd"
            assert srv.stop() == 0
    finally:
        sock.close()


def test_backlog_accepted():
    with running("simple_apps:hello", "--backlog", "16") as srv:
        # More simultaneous connections than the backlog still get served (one by one).
        results = []

        def one():
            try:
                results.append(raw_request(srv.port)[0])
            except OSError as exc:
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert results == [200] * 24


@pytest.mark.parametrize("loop,expected", [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_loop(loop, expected):
    pytest.importorskip("uvloop")
    with running("edge_apps:info", "--loop", loop) as srv:
        assert get_json(srv.url)["loop"].startswith(expected), get_json(srv.url)["loop"]


def test_root_path():
    with running("edge_apps:info", "--root-path", "/api") as srv:
        body = get_json(srv.url + "/items?x=1")
        assert body["root_path"] == "/api"
        assert body["path"] == "/api/items"
        assert body["query_string"] == "x=1"


# ---------------------------------------------------------------------- logging
GARBAGE = b"THIS IS NOT HTTP\r\n\r\n"


def _send_garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(GARBAGE)
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_log_level_debug_shows_debug_lines():
    with running("simple_apps:hello", "--log-level", "debug") as srv:
        _send_garbage(srv.port)
        out = srv.wait_for("invalid HTTP request")
        assert re.search(r"DEBUG\s+tether\.error: invalid HTTP request", out), out


def test_log_level_info_hides_debug_lines():
    with running("simple_apps:hello") as srv:
        _send_garbage(srv.port)
        assert raw_request(srv.port)[0] == 200
        srv.wait_for('"GET / HTTP/1.1" 200')  # the later request is logged, the garbage is not
        assert "invalid HTTP request" not in srv.output()
        assert "DEBUG" not in srv.output()


def test_log_level_warning_hides_info():
    port = free_port()
    with running("simple_apps:hello", "--log-level", "warning", "--port", str(port), port=False, ready=0) as srv:
        srv.wait_serving(port)
        assert raw_request(port)[0] == 200
        time.sleep(0.3)
        assert srv.stop() == 0
        out = srv.output()
        assert "Tether running on" not in out
        assert "Shutting down" not in out
        assert "GET / HTTP/1.1" not in out


def test_log_config_json(tmp_path):
    log_file = tmp_path / "tether.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"custom": {"format": "CUSTOM|%(name)s|%(levelname)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "custom"}},
        "loggers": {
            "tether": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    port = free_port()
    with running("simple_apps:hello", "--log-config", str(path), "--port", str(port), port=False, ready=0) as srv:
        srv.wait_serving(port)
        assert raw_request(port, path="/logged")[0] == 200
        wait_until(lambda: "/logged" in log_file.read_text(), 5,
                   lambda: f"/logged in the log file:\n{log_file.read_text()}", interval=0.05)
        text = log_file.read_text()
        assert "CUSTOM|tether.error|INFO|Tether running on" in text
        assert re.search(r'CUSTOM\|tether\.access\|INFO\|.*"GET /logged HTTP/1\.1" 200', text), text
        assert "Tether running on" not in srv.output()  # nothing went to the default stderr handler


def test_log_config_ini(tmp_path):
    log_file = tmp_path / "ini.log"
    path = tmp_path / "logging.ini"
    path.write_text(
        "[loggers]\nkeys=root,tether\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_tether]\nlevel=INFO\nhandlers=file\nqualname=tether\npropagate=0\n\n"
        f"[handler_file]\nclass=FileHandler\nlevel=INFO\nformatter=plain\nargs=({str(log_file)!r},)\n\n"
        "[formatter_plain]\nformat=INI %(name)s %(message)s\n"
    )
    port = free_port()
    with running("simple_apps:hello", "--log-config", str(path), "--port", str(port), port=False, ready=0) as srv:
        srv.wait_serving(port)
        wait_until(lambda: log_file.exists() and "INI tether.access" in log_file.read_text(), 5,
                   "the access line in the log file", interval=0.05)
        assert "INI tether.error Tether running on" in log_file.read_text()


def test_access_log_default_on():
    with running("simple_apps:hello") as srv:
        assert raw_request(srv.port, path="/seen?q=1")[0] == 200
        out = srv.wait_for('"GET /seen?q=1 HTTP/1.1" 200 12 ')
        assert re.search(r'127\.0\.0\.1:\d+ - "GET /seen\?q=1 HTTP/1\.1" 200 12 \d+\.\dms', out), out


def test_no_access_log():
    with running("simple_apps:hello", "--no-access-log") as srv:
        for _ in range(3):
            assert raw_request(srv.port, path="/unseen")[0] == 200
        time.sleep(0.3)
        assert srv.stop() == 0
        out = srv.output()
        assert "/unseen" not in out
        assert "Shutting down" in out  # the error log still works


def test_access_log_format_custom_fields():
    fmt = "ACCESS method={method} path={path} qs={query_string} v={http_version} st={status} b={bytes} ms={duration_ms:.0f} c={client}"
    with running("simple_apps:hello", "--access-log-format", fmt) as srv:
        assert raw_request(srv.port, path="/fmt?a=b")[0] == 200
        out = srv.wait_for("ACCESS method=GET")
        assert re.search(r"ACCESS method=GET path=/fmt qs=a=b v=1\.1 st=200 b=12 ms=\d+ c=127\.0\.0\.1:\d+", out), out


# ---------------------------------------------------------------------- headers
def test_extra_headers():
    with running("simple_apps:hello", "--header", "x-one:1", "--header", "X-Two: two words") as srv:
        response = httpx.get(srv.url, timeout=5)
        assert response.headers["x-one"] == "1"
        assert response.headers["x-two"] == "two words"


def test_server_and_date_headers_default_on():
    with running("simple_apps:hello") as srv:
        lines = raw_header_lines(srv.port)
        names = [line.split(":", 1)[0].lower() for line in lines[1:]]
        assert names.count("server") == 1 and "server: tether" in [line.lower() for line in lines]
        assert names.count("date") == 1
        date = next(line for line in lines if line.lower().startswith("date:"))
        assert re.match(r"date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$", date, re.I), date


def test_no_server_header_no_date_header():
    with running("simple_apps:hello", "--no-server-header", "--no-date-header") as srv:
        lines = raw_header_lines(srv.port)
        names = [line.split(":", 1)[0].lower() for line in lines[1:]]
        assert "server" not in names and "date" not in names, lines
        assert httpx.get(srv.url, timeout=5).text == "hello, world"


# ---------------------------------------------------------------------- shutdown and recycling
def _start_in_thread(fn):
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except Exception as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_graceful_shutdown_lets_a_request_finish():
    with running("edge_apps:info", "--timeout-graceful-shutdown", "10") as srv:
        thread, result = _start_in_thread(lambda: httpx.get(srv.url + "/sleep?s=1.5", timeout=15))
        srv.wait_for("SLEEP START")
        srv.send_signal(signal.SIGTERM)
        thread.join(15)
        assert "error" not in result, result
        assert result["value"].status_code == 200 and result["value"].text == "slept 1.5"
        assert srv.wait(10) == 0
        out = srv.output()
        assert "SLEEP DONE" in out and "timed out" not in out
        # Once the signal arrived, no new connection is accepted.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_graceful_shutdown_times_out():
    with running("edge_apps:info", "--timeout-graceful-shutdown", "1") as srv:
        thread, result = _start_in_thread(lambda: httpx.get(srv.url + "/sleep?s=30", timeout=20))
        srv.wait_for("SLEEP START")
        started = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        code = srv.wait(10)
        elapsed = time.monotonic() - started
        thread.join(10)
        assert code == 0
        assert 0.8 < elapsed < 8, elapsed
        assert "error" in result, "the request that outlived the timeout must be cut"
        out = srv.output()
        assert "Graceful shutdown timed out after 1.0s" in out
        assert "SLEEP DONE" not in out


def test_sigint_stops_too():
    with running("simple_apps:hello") as srv:
        srv.send_signal(signal.SIGINT)
        assert srv.wait(10) == 0
        assert "Shutting down" in srv.output()


def test_limit_max_requests_single_process():
    with running("edge_apps:info", "--limit-max-requests", "3") as srv:
        pids = {json.loads(raw_request(srv.port)[2])["pid"] for _ in range(3)}
        assert pids == {srv.pid}
        assert srv.wait(10) == 0
        assert "Maximum request limit reached" in srv.output()
