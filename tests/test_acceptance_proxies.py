"""Acceptance: real proxies in front of Tether (nginx, HAProxy, Caddy). Does a client leaving
the proxy reach the app, and how fast?

Each configuration of tests/proxies.py (the same code bench/proxies.py runs for README's
table) is started for real, and a client leaves it before the response starts, during a quiet
stream and during a busy one. Where a proxy does not pass the client's departure on, the test
asserts that documented fact, so that it fails if the proxy's behaviour changes, and the
tests below it show what ends the abandoned request instead (a proxy timeout).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.server import serve
from tests.support.waiting import wait_until
from tests.proxies import NGINX_PLAIN, PHASES, SETUPS, Board, hello, measuring_app, trial
from tests.support.components import run_haproxy, run_nginx

pytestmark = pytest.mark.timeout(120)

PATIENCE = 2.0  # seconds a trial waits for the app to be told
TRIALS = 3


@pytest.fixture(scope="module")
def tether() -> Any:
    board = Board()
    with serve(measuring_app(board, PATIENCE), lifespan="off", access_log=False) as srv:
        yield board, srv


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name.replace(" ", "-") for s in SETUPS])
def test_the_client_leaving_the_proxy(setup: Any, tether: Any) -> None:
    board, srv = tether
    with setup.start(srv.port) as (port, _):
        hello(board, port)  # the proxy works at all
        for phase in PHASES:
            if setup.told[phase]:
                results = [trial(board, port, phase, PATIENCE) for _ in range(TRIALS)]
                assert None not in results, f"{setup.name}, {phase}: the app was not told within {PATIENCE} s: {results}"
                print(f"\n[{setup.name}] {phase}: told after {', '.join(f'{ms:.1f}' for ms in results)} ms")
                assert max(results) < 1000, (setup.name, phase, results)
            else:
                # The documented fact: this configuration does not pass the departure on.
                result = trial(board, port, phase, PATIENCE)
                assert result is None, (f"{setup.name}, {phase}: the app WAS told ({result:.1f} ms): the proxy's "
                                        "behaviour changed, update README's table")


def test_nginx_keepalive_closes_the_upstream_connection_of_an_aborted_request(tether: Any) -> None:
    """With an upstream keepalive pool, nginx does not put the connection of an aborted request
    back in the pool: it closes it (which is how the app is told), and the next request
    gets another connection."""
    board, srv = tether
    keepalive = next(s for s in SETUPS if s.name == "nginx keepalive")
    with keepalive.start(srv.port) as (port, _):
        first, second = hello(board, port), hello(board, port)
        assert first == second, "nginx did not reuse its upstream connection: the keepalive pool is not in use"
        assert trial(board, port, "before_response", PATIENCE) is not None
        aborted = board.clients[board.last_trial]
        after = hello(board, port)
        assert after != aborted, "nginx reused the upstream connection of the aborted request"


def test_haproxy_default_tells_the_app_only_when_timeout_server_expires(tether: Any) -> None:
    board, srv = tether
    with run_haproxy(srv.port, defaults_extra="    timeout server 1s") as (port, tmp):
        for phase in ("before_response", "idle_stream"):
            result = trial(board, port, phase, PATIENCE)
            assert result is not None and 600 < result < 1800, (phase, result)
        # HAProxy's log: a server-side timeout while waiting for the head (sH), then during the data (sD).
        wait_until(lambda: all(flag in (tmp / "haproxy.log").read_text() for flag in (" sH-- ", " sD-- ")),
                   what="HAProxy's log lines with the server timeout flags")


def test_nginx_ignore_client_abort_tells_the_app_only_when_proxy_read_timeout_expires(tether: Any) -> None:
    board, srv = tether
    location = NGINX_PLAIN + "\n            proxy_ignore_client_abort on;\n            proxy_read_timeout 1s;"
    with run_nginx(srv.port, location=location) as (port, _):
        for phase in ("before_response", "idle_stream"):
            result = trial(board, port, phase, PATIENCE)
            assert result is not None and 600 < result < 1800, (phase, result)


def test_haproxy_abortonclose_with_send_proxy_v2() -> None:
    """The production set-up: HAProxy with abortonclose writing PROXY v2 headers to Tether."""
    board = Board()
    with serve(measuring_app(board, PATIENCE), lifespan="off", access_log=False, proxy_protocol="v2") as srv, \
            run_haproxy(srv.port, "send-proxy-v2", defaults_extra="    option abortonclose") as (port, _):
        client = hello(board, port)
        assert client[0] == "127.0.0.1" and client[1] != 0
        for phase in PHASES:
            result = trial(board, port, phase, PATIENCE)
            assert result is not None and result < 1000, (phase, result)
