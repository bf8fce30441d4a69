"""A Gunicorn worker class: ``gunicorn -k tether.workers.TetherWorker main:app``.

Gunicorn's arbiter owns the processes (forking, --workers, SIGHUP reloads, --timeout, --max-requests
replacements, its logs); each worker runs Tether's own Server on the listeners Gunicorn bound, with
Tether's protocols (HTTP/1.1, h2c, h2 by ALPN, WebSocket), request cycle and disconnect policy.

Settings: Gunicorn's, where Gunicorn has one (GUNICORN_SETTINGS below says which Tether option each
sets); every other Tether option as a TETHER_<OPTION> environment variable, from the shell or from
Gunicorn's own ``--env`` / ``raw_env``. A TETHER_ variable for an option Gunicorn sets is ignored
with a warning, and so is a non-default Gunicorn setting that only Gunicorn's own workers read.

Signals, as Gunicorn's workers take them: SIGTERM is a graceful stop (in-flight requests get
--graceful-timeout), SIGINT/SIGQUIT a quick one, SIGUSR1 reopens the log files, SIGABRT (the
arbiter's --timeout) ends the worker even when its event loop is blocked. The heartbeat that keeps
--timeout from killing a healthy worker runs on the event loop, so a blocked loop stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import traceback
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from .cli import options_from_environment
from .config import Config
from .errors import ConfigError
from .lifespan import LifespanFailed
from .logs import access_logger, error_logger
from .server.sockets import set_keepalive_options
from .server.worker import Server, run_in_new_loop

# Tether options that come from Gunicorn: option -> the Gunicorn setting (named as on its CLI).
GUNICORN_SETTINGS = {
    "app": "APP", "factory": "APP ('module:create_app()')", "app_dir": "--chdir / --pythonpath",
    "host": "--bind", "port": "--bind", "uds": "--bind", "fd": "--bind", "backlog": "--backlog",
    "workers": "--workers", "reload": "--reload", "reload_dirs": "--reload-extra-file",
    "reload_includes": "--reload", "reload_excludes": "--reload",
    "timeout_keep_alive": "--keep-alive", "timeout_graceful_shutdown": "--graceful-timeout",
    "limit_max_requests": "--max-requests", "limit_max_requests_jitter": "--max-requests-jitter",
    "limit_request_line": "--limit-request-line", "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field_size", "forwarded_allow_ips": "--forwarded-allow-ips",
    "ssl_certfile": "--certfile", "ssl_keyfile": "--keyfile", "ssl_ca_certs": "--ca-certs",
    "ssl_cert_reqs": "--cert-reqs", "ssl_ciphers": "--ciphers",
    "log_level": "--log-level", "log_config": "--log-config", "access_log": "--access-logfile",
    "workers_lifetime": "(nothing: Gunicorn replaces a worker after --max-requests)",
    "workers_max_rss": "(nothing: Gunicorn replaces a worker after --max-requests)",
}
# Gunicorn settings that only its own workers read (Gunicorn 24+ for most): the Tether variable to use.
GUNICORN_ONLY = {
    "access_log_format": "TETHER_ACCESS_LOG_FORMAT", "worker_connections": "TETHER_LIMIT_CONCURRENCY",
    "asgi_loop": "TETHER_LOOP", "asgi_lifespan": "TETHER_LIFESPAN",
    "asgi_disconnect_grace_period": "TETHER_ON_DISCONNECT and TETHER_DISCONNECT_GRACE",
    "http_protocols": "TETHER_HTTP", "http2_cleartext": "TETHER_HTTP",
    "http2_max_concurrent_streams": "TETHER_H2_MAX_CONCURRENT_STREAMS",
    "http2_initial_window_size": "TETHER_H2_INITIAL_WINDOW_SIZE", "http2_max_frame_size": "TETHER_H2_MAX_FRAME_SIZE",
    "http2_max_header_list_size": "TETHER_H2_MAX_HEADER_LIST_SIZE", "websocket_max_message_size": "TETHER_WS_MAX_SIZE",
}
CERT_REQS = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional", ssl.CERT_REQUIRED: "required"}
MAX_REQUEST_LINE, MAX_HEADERS, MAX_FIELD_SIZE = 8190, 32768, 8190  # Gunicorn's own bounds


class TetherWorker(Worker):
    """Serves an ASGI 3 app with Tether inside a Gunicorn worker process."""

    config: Config
    server: Server | None = None

    # ------------------------------------------------------------------ set-up (in the worker)
    def init_process(self) -> None:
        # Gunicorn's --env is applied in the arbiter and again by super().init_process(); the
        # settings are read here, in the worker, so that a bad one fails this boot with one line.
        for key, value in (self.cfg.env or {}).items():
            os.environ[key] = value
        self._route_logging()
        try:
            self.config = self._config()
        except ConfigError as exc:
            self.log.error("tether: error: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        super().init_process()  # loads the app (self.wsgi), then calls run()

    def _config(self) -> Config:
        cfg = self.cfg
        owned = dict(GUNICORN_SETTINGS)
        if "root_path" in cfg.settings:  # Gunicorn 24+
            owned["root_path"] = "--root-path"
        options = options_from_environment()
        for name in sorted(set(options) & set(owned)):
            self.log.warning("TETHER_%s is ignored under Gunicorn: %s applies", name.upper(), owned[name])
            del options[name]
        for name, variable in GUNICORN_ONLY.items():
            if _is_set(cfg, name):
                self.log.warning("Gunicorn's %s is for its own workers: TetherWorker uses %s",
                                 cfg.settings[name].cli[0] if cfg.settings[name].cli else name, variable)
        if options.get("metrics"):  # (every worker would open its own listener, and lose its counts with it)
            raise ConfigError("TETHER_METRICS is not supported under Gunicorn: use tether --workers N --metrics, "
                              "or Gunicorn's --statsd-host")
        proxy_protocol = getattr(cfg, "proxy_protocol", False)
        if proxy_protocol and proxy_protocol != "off":
            raise ConfigError("Gunicorn's --proxy-protocol is not supported by tether.workers.TetherWorker")
        if getattr(cfg, "protocol", "http") != "http":
            raise ConfigError(f"Gunicorn's --protocol {cfg.protocol} is not supported by tether.workers.TetherWorker")
        graceful = float(cfg.graceful_timeout)
        line = cfg.limit_request_line
        options.update(
            backlog=cfg.backlog,
            timeout_keep_alive=float(cfg.keepalive),
            # A little before the arbiter's SIGKILL, so that cancelled requests and the lifespan
            # shutdown still run.
            timeout_graceful_shutdown=graceful - min(1.0, graceful / 10),
            limit_max_requests=self.max_requests if cfg.max_requests > 0 else None,  # jitter included
            limit_request_line=1024 * 1024 if line == 0 else MAX_REQUEST_LINE if line < 0 or line > MAX_REQUEST_LINE else line,
            limit_request_fields=cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS,
            limit_request_field_size=cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else MAX_FIELD_SIZE,
            forwarded_allow_ips=",".join(_as_list(cfg.forwarded_allow_ips)),
            log_level=str(cfg.loglevel).lower() if str(cfg.loglevel).lower() in ("debug", "info", "warning", "error", "critical") else "info",
            access_log=self._access_log_enabled(),
        )
        if "root_path" in owned:
            options["root_path"] = cfg.root_path or ""
        if cfg.is_ssl:
            options.update(ssl_certfile=cfg.certfile, ssl_keyfile=cfg.keyfile, ssl_ca_certs=cfg.ca_certs,
                           ssl_cert_reqs=CERT_REQS.get(cfg.cert_reqs, "none"))
            if cfg.ciphers:
                options["ssl_ciphers"] = cfg.ciphers
        return Config.from_options(**options)

    def _access_log_enabled(self) -> bool:
        enabled = getattr(self.log, "access_log_enabled", None)  # Gunicorn 25+
        if enabled is not None:
            return bool(enabled)
        cfg = self.cfg
        return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or getattr(cfg, "logconfig_json", None)
                    or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))

    def _route_logging(self) -> None:
        """Tether's loggers write through Gunicorn's handlers (--error-logfile, --access-logfile,
        --log-config, syslog), at Gunicorn's level; the access line is Tether's own format."""
        for logger, name in ((error_logger, "error_log"), (access_logger, "access_log")):
            if logger.handlers:  # configured by the user's --log-config: theirs
                continue
            source = getattr(self.log, name, None) or logging.getLogger(f"gunicorn.{name.split('_')[0]}")
            logger.handlers = list(source.handlers)
            logger.setLevel(source.level or logging.INFO)
            logger.propagate = False
        enabled = self._access_log_enabled()
        access_logger.disabled = not enabled
        if not enabled:
            access_logger.setLevel(logging.CRITICAL + 1)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        if not self.alive:  # stopped while booting
            return
        self.config.app = self.wsgi  # the app Gunicorn imported
        try:
            app = self.config.load_app()  # checks it is ASGI 3
        except ConfigError as exc:
            self.log.error("tether: error: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        self.server = Server(self.config, app)
        try:
            run_in_new_loop(self._serve, self.config.loop)
        except (ConfigError, LifespanFailed) as exc:
            if self.server.started:
                raise
            self.log.error("tether: error: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    async def _serve(self) -> None:
        # Gunicorn's signal handlers applied until now (a SIGTERM while the app imported ended the
        # boot); these four move onto the loop. SIGABRT keeps Gunicorn's plain handler, which
        # works while the loop is blocked.
        loop = asyncio.get_running_loop()
        server = self.server
        assert server is not None
        loop.add_signal_handler(signal.SIGTERM, server.request_exit)
        for sig in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self._quick_exit)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        sockets = [getattr(listener, "sock", listener) for listener in self.sockets]  # Gunicorn's, bound
        config = self.config
        if config.tcp_keepalive:
            for sock in sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    set_keepalive_options(sock, config.tcp_keepalive_idle, config.tcp_keepalive_interval,
                                          config.tcp_keepalive_count)
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await server.serve(sockets=sockets, install_signals=False)
        finally:
            heartbeat.cancel()

    def handle_abort(self, sig: int, frame: Any) -> None:
        """SIGABRT: the arbiter's --timeout expired, so the event loop is blocked (the heartbeat
        runs on it). Say where it is stuck and end the process at once: unwinding with
        SystemExit, as Gunicorn's own handler does, would run through the app that blocks."""
        self.alive = False
        self.cfg.worker_abort(self)
        stack = "".join(traceback.format_stack(frame, limit=8)) if frame is not None else "(unknown)\n"
        self.log.error("Worker %s aborted by the arbiter (--timeout %s s): its event loop was blocked in\n%s",
                       os.getpid(), self.cfg.timeout, stack.rstrip())
        for handler in self.log.error_log.handlers:
            handler.flush()
        os._exit(1)

    def _quick_exit(self) -> None:
        self.cfg.worker_int(self)
        assert self.server is not None
        self.server.request_exit()
        self.server.request_exit(force=True)  # in-flight requests are cancelled at once

    async def _heartbeat(self) -> None:
        """Tell the arbiter this worker is alive (its --timeout), for as long as the loop runs;
        stop when Gunicorn says so (its reloader clears ``alive``) or the arbiter is gone."""
        interval = min(1.0, self.timeout / 2) if self.timeout > 0 else 1.0
        server = self.server
        assert server is not None
        while True:
            self.notify()
            if not server.should_exit:
                if not self.alive:
                    server.request_exit()
                elif os.getppid() != self.ppid:
                    self.log.info("Parent changed, shutting down: %s", self)
                    server.request_exit()
            await asyncio.sleep(interval)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


def _is_set(cfg: Any, name: str) -> bool:
    """Whether Gunicorn setting ``name`` exists in this version and differs from its default."""
    setting = cfg.settings.get(name)
    if setting is None:
        return False
    try:
        default = setting.validator(setting.default) if setting.validator else setting.default
    except Exception:  # a validator that needs more context: compare the raw default
        default = setting.default
    return setting.get() != default
