"""Sockets, workers, signals, reload and graceful shutdown: everything that owns a process."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .sockets import bind_socket
from .supervisor import Supervisor
from .worker import STARTUP_FAILED, Server, run_worker

__all__ = ["Server", "run_config"]


def run_config(config: Config) -> int:
    """Run Tether as configured, in this process or under a supervisor. Returns the exit status."""
    config.configure_logging()
    if config.workers > 1 or config.reload:
        if not isinstance(config.app, str) and config.app is not None:
            raise ConfigError("--workers and --reload need the app as an import string, like 'main:app'")
        return Supervisor(config, [bind_socket(config)]).run()
    code = run_worker(config, None)
    return 1 if code == STARTUP_FAILED else code
