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
    recycling = config.workers_lifetime is not None or config.workers_max_rss is not None
    if config.workers > 1 or config.reload or recycling:  # a worker is replaced by a supervisor
        if not isinstance(config.app, str) and config.app is not None:
            needs = "--workers and --reload" if config.workers > 1 or config.reload else "--workers-lifetime and --workers-max-rss"
            raise ConfigError(f"{needs} need the app as an import string, like 'main:app'")
        return Supervisor(config, [bind_socket(config)]).run()
    code = run_worker(config, None)
    return 1 if code == STARTUP_FAILED else code
