"""--reload for real: an app file in a tmp dir, edited while Tether serves it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import Tether, running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

APP_TEMPLATE = """\
from pathlib import Path

try:
    EXTRA = (Path(__file__).parent / "settings.cfg").read_text().strip()
except OSError:
    EXTRA = ""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": ({body!r} + EXTRA).encode()}})
"""


def write_app(directory: Path, body: str, name: str = "reload_app.py") -> None:
    path = directory / name
    path.write_text(APP_TEMPLATE.format(body=body))


def text_of(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def eventually_serves(srv: Tether, expected: str, timeout: float = 10.0) -> None:
    """``srv`` answers ``expected`` within ``timeout``; the failure shows the server's output."""
    wait_until(lambda: text_of(srv.url) == expected, timeout,
               lambda: f"{srv.url} answering {expected!r} (now {text_of(srv.url)!r}):\n{srv.output()}", interval=0.1)


def touch(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    write_app(directory, "version 1")
    return directory


def test_edit_reloads(app_dir):
    with running("reload_app:app", "--reload", cwd=app_dir) as srv:
        out = srv.output()
        assert "Watching for changes in" in out and str(app_dir) in out
        assert text_of(srv.url) == "version 1"
        first_worker = srv.worker_pids()[0]
        write_app(app_dir, "version 2")
        eventually_serves(srv, "version 2")
        assert "Detected changes in reload_app.py: reloading" in srv.output()
        assert srv.worker_pids()[-1] != first_worker  # a fresh worker imported the new code
        assert srv.stop() == 0


def test_reload_with_app_dir_from_elsewhere(app_dir, tmp_path):
    with running("reload_app:app", "--reload", "--app-dir", str(app_dir), cwd=tmp_path) as srv:
        assert text_of(srv.url) == "version 1"
        write_app(app_dir, "version 2")
        eventually_serves(srv, "version 2")


def test_excluded_file_does_not_reload(app_dir):
    helper = app_dir / "skip_me.py"
    helper.write_text("X = 1\n")
    with running("reload_app:app", "--reload", "--reload-exclude", "skip_*.py", cwd=app_dir) as srv:
        assert text_of(srv.url) == "version 1"
        helper.write_text("X = 2\n")
        (app_dir / "notes.txt").write_text("not a python file\n")  # not included by default
        time.sleep(1.5)
        assert "Detected changes" not in srv.output()
        assert len(srv.worker_pids()) == 1
        write_app(app_dir, "version 3")
        eventually_serves(srv, "version 3")
        out = srv.output()
        assert out.count("Detected changes") == 1
        line = next(line for line in out.splitlines() if "Detected changes" in line)
        assert "reload_app.py" in line and "skip_me.py" not in line


def test_included_pattern_reloads(app_dir):
    (app_dir / "settings.cfg").write_text("+cfg1\n")
    with running("reload_app:app", "--reload", "--reload-include", "*.cfg", cwd=app_dir) as srv:
        assert text_of(srv.url) == "version 1+cfg1"
        (app_dir / "settings.cfg").write_text("+cfg2\n")
        eventually_serves(srv, "version 1+cfg2")
        assert "Detected changes in settings.cfg" in srv.output()


def test_reload_dir(app_dir, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "trigger.py").write_text("A = 1\n")
    with running("reload_app:app", "--reload", "--reload-dir", str(watched), cwd=app_dir) as srv:
        assert str(watched) in srv.output()
        # The app dir is not watched now: editing the app alone does not reload ...
        write_app(app_dir, "version 2")
        time.sleep(1.5)
        assert "Detected changes" not in srv.output()
        assert text_of(srv.url) == "version 1"
        # ... a change in the watched dir does, and picks up the edited app too.
        (watched / "trigger.py").write_text("A = 2\n")
        eventually_serves(srv, "version 2")


def test_broken_edit_keeps_watching_and_recovers(app_dir):
    with running("reload_app:app", "--reload", cwd=app_dir) as srv:
        assert text_of(srv.url) == "version 1"
        (app_dir / "reload_app.py").write_text("this is not python(\n")
        srv.wait_for("Detected changes", timeout=10)
        srv.wait_for("SyntaxError", timeout=10)
        assert srv.proc.poll() is None, "the supervisor keeps running to wait for a fix"
        write_app(app_dir, "fixed")
        eventually_serves(srv, "fixed", timeout=15)
        assert srv.stop() == 0


def test_reload_with_two_workers(app_dir):
    with running("reload_app:app", "--reload", "--workers", "2", cwd=app_dir, ready=2) as srv:
        assert text_of(srv.url) == "version 1"
        write_app(app_dir, "version 2")
        srv.wait_ready(4, timeout=15)
        # Every worker now serves the new code.
        texts = {text_of(srv.url) for _ in range(20)}
        assert texts == {"version 2"}, (texts, srv.output())
        assert srv.stop() == 0
