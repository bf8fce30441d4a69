"""The built-in demo app (``tether`` with no APP): its JSON record of how soon the app was told,
its icon, and the page itself in headless Chromium at desktop and phone widths.

The browser test drives Debian's /usr/bin/chromium with playwright-core (tests/browser/, pinned
in its package-lock.json); .ci/setup installs both. It saves one screenshot per width, in
$DEMO_SCREENSHOT_DIR if set, else in the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.disconnect import hang_up
from tests.support.http1 import request
from tests.support.server import ROOT, cli_server, serve, server_idle
from tether import demo

BROWSER_DIR = ROOT / "tests" / "browser"
TOLD_WITHIN_MS = 50.0  # generous: loopback and an idle server tell the app in well under 1 ms
WIDTHS = (1000, 1280, 360)


def _ms(cell: str) -> float:
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?) ms", cell)
    assert match, f"not a figure in ms: {cell!r}"
    return float(match.group(1))


# ---------------------------------------------------------------------- the app, without a browser
def test_result_says_how_soon_the_app_was_told_after_the_client_left() -> None:
    with serve(demo.app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request(path="/wait?id=t1"))
        time.sleep(0.2)  # the app is waiting on the disconnect signal by now
        wall_before = time.time()
        hang_up(sock, "fin")
        response = httpx.get(srv.url + "/result?id=t1", timeout=10)
        wall_after = time.time()
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        record = response.json()
        assert record["told"] is True, record
        assert 0.0 < record["told_after"] < TOLD_WITHIN_MS / 1000, record
        assert 0.15 < record["held"] < 5, record  # from the app's start to the client leaving
        assert wall_before <= record["told_wall"] <= record["now"] <= wall_after, (wall_before, record, wall_after)
        assert record["stats"]["disconnects"]["before_response"] >= 1
        # The same record again, at once (the page's clock check asks for it three more times).
        assert httpx.get(srv.url + "/result?id=t1", timeout=5).json()["told_wall"] == record["told_wall"]
        server_idle(srv)


def test_icon_page_and_unknown_paths() -> None:
    with serve(demo.app, lifespan="off") as srv:
        icon = httpx.get(srv.url + "/favicon.ico", timeout=5)
        assert icon.status_code == 200
        assert icon.headers["content-type"] == "image/svg+xml"
        assert icon.content.startswith(b"<svg ") and icon.content.endswith(b"</svg>")
        page = httpx.get(srv.url + "/", timeout=5)
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert b'<link rel="icon" type="image/svg+xml" href="/favicon.ico">' in page.content
        assert b'name="viewport"' in page.content
        assert httpx.get(srv.url + "/nope", timeout=5).status_code == 404


# ---------------------------------------------------------------------- the page, in Chromium
@pytest.mark.timeout(150)
def test_demo_page_in_headless_chromium(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is missing: .ci/setup installs it"
    assert Path("/usr/bin/chromium").exists(), "chromium is missing: .ci/setup installs it"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core is missing: .ci/setup runs npm ci in tests/browser"
    shots = Path(os.environ.get("DEMO_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with cli_server() as (proc, port):
        browser = subprocess.run(
            [node, str(BROWSER_DIR / "demo.mjs"), f"http://127.0.0.1:{port}/", str(shots), *map(str, WIDTHS)],
            cwd=BROWSER_DIR, capture_output=True, text=True, timeout=120,
        )
        proc.terminate()
        log, _ = proc.communicate(timeout=20)
    assert browser.returncode == 0, f"demo.mjs failed:\n{browser.stderr[-4000:]}"
    report = json.loads(browser.stdout)

    assert [entry["width"] for entry in report["widths"]] == list(WIDTHS)
    for entry in report["widths"]:
        width = entry["width"]
        assert entry["problems"] == [], f"at {width} px: {entry['problems']} (see {entry['screenshot']})"
        assert len(entry["rows"]) == 2, entry
        for number, held, server, page in entry["rows"]:
            # About the page's 300 ms; less when the browser was slow to send the request.
            assert 0 < _ms(held) < 2000, (width, held)
            assert 0 < _ms(server) < TOLD_WITHIN_MS, f"at {width} px the server side took {server}"
            assert re.fullmatch(r"\d+\.\d{3} ms", server), f"not microsecond resolution: {server}"
            # Two clocks of one machine: the browser's closing work is in it, a second is not.
            assert 0 < _ms(page) < 1000, f"at {width} px abort -> told was {page}"
        clock, stats = entry["notes"]
        assert re.fullmatch(r"Clock check: the server's clock is \d+\.\d ms (ahead of|behind) the page's "
                            r"\(\u00b1\d+\.\d ms, half the shortest of three round trips\)\.", clock), clock
        assert "tether.stats() of this worker:" in stats and "before the response" in stats, stats
        shot = Path(entry["screenshot"])
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
    assert report["http_errors"] == [] and report["failed_requests"] == [], report
    assert report["console_errors"] == [], report["console_errors"]

    # The server's own account: every request answered 200, the abandoned ones logged 499, and
    # nothing the browser asked for of its own accord (the icon) was a 404.
    lines = re.findall(r'"GET (\S+) HTTP/1\.1" (\d{3}) ', log)
    assert lines, log
    wrong = [(path, status) for path, status in lines if status != ("499" if path.startswith("/wait?") else "200")]
    assert wrong == [], log
    assert sum(path.startswith("/wait?") for path, _ in lines) == 2 * len(WIDTHS), log
