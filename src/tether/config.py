"""Config: every option Tether has, its default, and its validation.

The CLI (``cli.py``) and the Python API (``tether.run(app, **options)``) both end here, so an
option behaves the same whichever way it is given. Nothing in this module touches a socket.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import logging
import logging.config
import os
import ssl
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from .errors import ConfigError
from .protocols.wire import check_field

LOOP_CHOICES = ("auto", "asyncio", "uvloop")
LIFESPAN_CHOICES = ("auto", "on", "off")
ON_DISCONNECT_CHOICES = ("notify", "cancel")
WS_CHOICES = ("auto", "none")
HTTP_CHOICES = ("auto", "1", "2")
PROXY_PROTOCOL_CHOICES = ("off", "v1", "v2", "auto")  # Gunicorn 27's --proxy-protocol values
LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}
SSL_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

DEFAULT_ACCESS_LOG_FORMAT = '{client} - "{request_line}" {status} {bytes} {duration_ms:.1f}ms{note}'


@dataclass
class Config:
    """All of Tether's options. Field names are the CLI option names with ``_`` for ``-``."""

    app: Any = None
    factory: bool = False
    app_dir: str | None = "."
    # Sockets.
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = 2048
    # Processes.
    workers: int = 1
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    reload_includes: list[str] = field(default_factory=list)
    reload_excludes: list[str] = field(default_factory=list)
    loop: str = "auto"
    lifespan: str = "auto"
    # HTTP.
    root_path: str = ""
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    proxy_protocol: str = "off"
    timeout_keep_alive: float = 5.0
    timeout_graceful_shutdown: float | None = 30.0
    limit_concurrency: int | None = None
    limit_max_requests: int | None = None
    limit_max_requests_jitter: int = 0
    # Request limits and client timeouts (README "Security and limits").
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_body: int | None = None
    timeout_request_header: float = 10.0
    timeout_request_body: float = 60.0
    timeout_write: float = 60.0
    headers: list[str] = field(default_factory=list)
    server_header: bool = True
    date_header: bool = True
    # TLS.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "none"
    # TLS 1.2 suites (TLS 1.3 ones are not affected): forward secrecy + AEAD. "TLSv1" (Uvicorn's
    # default) offers only SHA-1 CBC suites to TLS 1.2 clients and locks out AEAD-only clients.
    ssl_ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
    # Logging.
    log_level: str = "info"
    log_config: str | None = None
    access_log: bool = True
    access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT
    # Prometheus metrics (tether/metrics); names and defaults are Granian's.
    metrics: bool = False
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9090
    # Client disconnects.
    on_disconnect: str = "notify"
    disconnect_grace: float = 0.0
    cancel_queries: bool = True
    timeout_request: float | None = None
    tcp_keepalive: bool = True
    tcp_keepalive_idle: int = 10
    tcp_keepalive_interval: int = 5
    tcp_keepalive_count: int = 3
    # HTTP/2.
    http: str = "auto"
    h2_max_concurrent_streams: int = 100
    h2_max_header_list_size: int = 65536
    h2_initial_window_size: int = 65535
    h2_max_frame_size: int = 16384
    h2_ping_interval: float = 20.0
    h2_ping_timeout: float = 20.0
    # WebSocket.
    ws: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_max_queue: int = 32
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    ws_close_timeout: float = 5.0
    # Worker recycling (server/recycling.py): replace a worker gracefully after this long / past this RSS.
    workers_lifetime: float | None = None
    workers_max_rss: int | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "Config":
        # An unknown keyword is a ConfigError (one readable line), not the dataclass's TypeError.
        unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__))  # type: ignore[attr-defined]
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return super().__new__(cls)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def choice(name: str, choices: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, not {value!r}")

        choice("loop", LOOP_CHOICES)
        choice("lifespan", LIFESPAN_CHOICES)
        choice("on_disconnect", ON_DISCONNECT_CHOICES)
        choice("ssl_cert_reqs", tuple(SSL_CERT_REQS))
        choice("ws", WS_CHOICES)
        choice("http", HTTP_CHOICES)
        choice("proxy_protocol", PROXY_PROTOCOL_CHOICES)
        for name in ("h2_max_concurrent_streams", "h2_max_header_list_size", "h2_initial_window_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not 1 <= self.h2_initial_window_size <= 2**31 - 1:
            raise ConfigError("--h2-initial-window-size must be between 1 and 2147483647")
        if not 16384 <= self.h2_max_frame_size <= 16777215:
            raise ConfigError("--h2-max-frame-size must be between 16384 and 16777215 (RFC 9113)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, not {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be between 0 and 65535, not {self.metrics_port}")
        try:
            ipaddress.ip_address(self.metrics_address)
        except ValueError:
            raise ConfigError(f"--metrics-address must be an IP address (like 127.0.0.1, 0.0.0.0 or ::), "
                              f"not {self.metrics_address!r}") from None
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {self.workers}")
        for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.limit_request_body is not None and self.limit_request_body < 0:
            raise ConfigError(f"--limit-request-body must not be negative, not {self.limit_request_body}")
        for name in ("limit_concurrency", "limit_max_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        for name in ("ws_max_size", "ws_max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        for name in ("timeout_keep_alive", "timeout_request_header", "timeout_request_body", "timeout_write",
                     "disconnect_grace", "ws_ping_interval", "ws_ping_timeout", "ws_close_timeout",
                     "h2_ping_interval", "h2_ping_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        for name in ("tcp_keepalive_idle", "tcp_keepalive_interval", "tcp_keepalive_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.timeout_request is not None and not self.timeout_request > 0:
            raise ConfigError(f"--timeout-request must be more than 0 seconds, not {self.timeout_request:g}")
        if self.workers_lifetime is not None and not self.workers_lifetime > 0:
            raise ConfigError(f"--workers-lifetime must be more than 0 seconds, not {self.workers_lifetime:g}")
        if self.workers_max_rss is not None and self.workers_max_rss < 1:
            raise ConfigError(f"--workers-max-rss must be at least 1 (MiB), not {self.workers_max_rss}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        for item in self.headers:
            name, sep, _ = item.partition(":")
            if not sep or not name.strip():
                raise ConfigError(f"--header must be NAME:VALUE, not {item!r}")
        try:
            for pair in self.encoded_default_headers():
                check_field(pair, "--header")  # (the check every protocol applies to the app's headers)
        except (RuntimeError, UnicodeEncodeError) as exc:
            raise ConfigError(f"--header: {exc}") from None
        try:
            trust_all, _ = self.forwarded_ips()
        except ValueError as exc:
            raise ConfigError(f"--forwarded-allow-ips: {exc}") from None
        if self.proxy_protocol != "off" and self.uds and not trust_all:
            # (a UNIX socket peer has no address to check: every connection would be refused)
            raise ConfigError("--proxy-protocol on a UNIX socket (--uds) needs --forwarded-allow-ips '*'")
        try:
            self.access_log_format.format(**_ACCESS_LOG_SAMPLE)
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigError(f"--access-log-format is not valid: {exc!r}") from None

    # ------------------------------------------------------------------ derived values
    @property
    def is_ssl(self) -> bool:
        return bool(self.ssl_certfile)

    @property
    def log_level_number(self) -> int:
        return LOG_LEVELS[self.log_level]

    def forwarded_ips(self) -> tuple[bool, list[Any]]:
        """(trust everyone, networks) from --forwarded-allow-ips."""
        items = [item.strip() for item in self.forwarded_allow_ips.split(",") if item.strip()]
        if "*" in items:
            return True, []
        return False, [ipaddress.ip_network(item, strict=False) for item in items]

    def encoded_default_headers(self) -> list[tuple[bytes, bytes]]:
        result = []
        for item in self.headers:
            name, _, value = item.partition(":")
            result.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
        return result

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.ssl_certfile:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.ssl_keyfile_password)
            context.verify_mode = SSL_CERT_REQS[self.ssl_cert_reqs]
            if self.ssl_ca_certs:
                context.load_verify_locations(self.ssl_ca_certs)
            if self.ssl_ciphers:
                context.set_ciphers(self.ssl_ciphers)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS setup failed: {exc}") from None
        context.set_alpn_protocols({"auto": ["h2", "http/1.1"], "1": ["http/1.1"], "2": ["h2"]}[self.http])
        return context

    def configure_logging(self) -> None:
        if self.log_config:
            path = self.log_config
            try:
                if path.endswith(".json"):
                    import json

                    with open(path) as fh:
                        logging.config.dictConfig(json.load(fh))
                elif path.endswith((".yaml", ".yml")):
                    import yaml  # type: ignore[import-untyped]

                    with open(path) as fh:
                        logging.config.dictConfig(yaml.safe_load(fh))
                else:
                    logging.config.fileConfig(path, disable_existing_loggers=False)
            except Exception as exc:  # any parse error is a config error for the user
                raise ConfigError(f"--log-config {path}: {exc}") from None
        else:
            from .logs import configure_default_logging

            configure_default_logging(self.log_level_number)
        level = self.log_level_number
        logging.getLogger("tether").setLevel(level)
        logging.getLogger("tether.error").setLevel(level)
        logging.getLogger("tether.access").setLevel(level if self.access_log else logging.CRITICAL + 1)
        logging.getLogger("tether.access").disabled = not self.access_log

    # ------------------------------------------------------------------ the application
    def load_app(self) -> Callable:
        """Import (or use) the app, call the factory if asked. Raises ConfigError on failure."""
        app = self.app
        if isinstance(app, str):
            if self.app_dir is not None:
                sys.path.insert(0, os.path.abspath(self.app_dir))
            app = import_from_string(app)
        if app is None:
            from .demo import app as demo_app

            app = demo_app
        if self.factory:
            try:
                app = app()
            except TypeError as exc:
                raise ConfigError(f"the app factory could not be called: {exc}") from None
            except Exception as exc:
                raise ConfigError(f"the app factory failed: {type(exc).__name__}: {exc}") from None
        if not callable(app):
            raise ConfigError(f"the app {self.app!r} is not callable")
        if _is_asgi2(app):
            raise ConfigError("ASGI 2 applications (double callable) are not supported; use ASGI 3")
        if not _takes_three_arguments(app):
            hint = "" if self.factory else " (if it is an app factory, add --factory)"
            raise ConfigError(f"the app {self.app!r} does not take (scope, receive, send){hint}")
        return app

    @classmethod
    def from_options(cls, **options: Any) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**options)


_ACCESS_LOG_SAMPLE = {
    "client": "127.0.0.1:5000",
    "request_line": "GET / HTTP/1.1",
    "method": "GET",
    "path": "/",
    "query_string": "",
    "http_version": "1.1",
    "status": 200,
    "bytes": 0,
    "duration_ms": 0.0,
    "note": "",
}


def import_from_string(target: str) -> Any:
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise ConfigError(f'app must be given as "module:attribute", not {target!r}')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"could not import module {module_name!r}") from None
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    try:
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
    except AttributeError:
        raise ConfigError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    return obj


def _is_asgi2(app: Any) -> bool:
    if inspect.isclass(app):
        return not hasattr(app, "__await__") and len(inspect.signature(app.__init__).parameters) == 2
    call = getattr(app, "__call__", None)
    return not (inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)) and _arity(app) == 1


def _takes_three_arguments(app: Any) -> bool:
    try:
        inspect.signature(app).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (some builtins): give it the benefit of the doubt
        return True
    return True


def _arity(app: Any) -> int:
    try:
        return len(inspect.signature(app).parameters)
    except (TypeError, ValueError):
        return 3
