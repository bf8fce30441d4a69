"""Tether: an ASGI server whose applications learn at once that the client left.

Public API:
    run(app, **options)      serve until stopped (what the CLI does)
    serve(app, config)       the same, awaitable inside an existing event loop
    Config                   every option, validated
    ClientDisconnected       raised by send() once the client has gone (an OSError)
    DeadlineExceeded         raised by send() once the request's deadline passed (a ClientDisconnected)
    is_disconnected()        from any thread of a request: has its client gone (or its deadline passed)?
    raise_if_disconnected()  the same, raising ClientDisconnected / DeadlineExceeded
    interruptible            with/decorator: a thread's pure-Python loop that the cancel may interrupt
    RequestCancelled         what interruptible() raises in the thread (a BaseException)
    stats()                  this process's request, disconnect and abandoned-work counters
"""

from __future__ import annotations

import sys
from typing import Any

from .config import Config
from .cycle.work import interruptible, is_disconnected, raise_if_disconnected
from .errors import ClientDisconnected, ConfigError, DeadlineExceeded, RequestCancelled
from .logs import STATS

__version__ = "0.1.0"
__all__ = ["run", "serve", "Config", "ClientDisconnected", "ConfigError", "DeadlineExceeded", "RequestCancelled",
           "interruptible", "is_disconnected", "raise_if_disconnected", "stats", "__version__"]


def run(app: Any = None, **options: Any) -> None:
    """Serve ``app`` (an ASGI callable or "module:attr" string) with the given options."""
    from .server import run_config

    try:
        code = run_config(Config.from_options(app=app, **options))
    except ConfigError as exc:
        print(f"tether: error: {exc}", file=sys.stderr)
        code = 1
    if code:
        raise SystemExit(code)


async def serve(app: Any, config: Config | None = None, install_signal_handlers: bool = False) -> None:
    """Serve inside the running event loop until cancelled or stopped by a signal."""
    from .server import Server

    config = config or Config()
    config.configure_logging()
    server = Server(config, app if not isinstance(app, str) else None)
    if isinstance(app, str):
        config.app = app
    await server.serve(install_signals=install_signal_handlers)


def stats() -> dict:
    """Counters for this process: requests, disconnects by phase, abandoned work."""
    return STATS.snapshot()
