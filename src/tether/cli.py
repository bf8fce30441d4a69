"""The command line: click options -> Config -> server. Every option is also TETHER_<OPTION>."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .config import LIFESPAN_CHOICES, LOG_LEVELS, LOOP_CHOICES, ON_DISCONNECT_CHOICES, SSL_CERT_REQS, WS_CHOICES, HTTP_CHOICES, PROXY_PROTOCOL_CHOICES, Config
from .errors import ConfigError

D = Config.__dataclass_fields__  # defaults, so that CLI and API cannot drift apart


def default(name: str) -> Any:
    f = D[name]
    return f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("app", required=False)
@click.option("--factory", is_flag=True, default=False, help="APP is a factory: call it to get the ASGI app.")
@click.option("--app-dir", default=".", show_default=True, help="Directory added to sys.path before importing APP.")
@click.option("--host", default=default("host"), show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=default("port"), show_default=True, help="Port to bind (0: any free port).")
@click.option("--uds", default=None, help="Bind a UNIX domain socket at this path instead.")
@click.option("--fd", type=int, default=None, help="Serve on an already bound socket with this file descriptor.")
@click.option("--backlog", type=int, default=default("backlog"), show_default=True, help="Listen backlog.")
@click.option("--workers", type=int, default=default("workers"), show_default=True, help="Worker processes.")
@click.option("--reload", is_flag=True, default=False, help="Restart the worker(s) when source files change.")
@click.option("--reload-dir", "reload_dirs", multiple=True, envvar="TETHER_RELOAD_DIR", help="Directory to watch (repeatable; default: --app-dir).")
@click.option("--reload-include", "reload_includes", multiple=True, envvar="TETHER_RELOAD_INCLUDE", help="Glob of files to watch (default: *.py).")
@click.option("--reload-exclude", "reload_excludes", multiple=True, envvar="TETHER_RELOAD_EXCLUDE", help="Glob of files to ignore.")
@click.option("--loop", type=click.Choice(LOOP_CHOICES), default="auto", show_default=True, help="Event loop.")
@click.option("--lifespan", type=click.Choice(LIFESPAN_CHOICES), default="auto", show_default=True, help="ASGI lifespan events.")
@click.option("--root-path", default="", help="ASGI root_path, for an app mounted below a path by a proxy.")
@click.option("--proxy-headers/--no-proxy-headers", default=True, show_default=True, help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips.")
@click.option("--forwarded-allow-ips", default=default("forwarded_allow_ips"), show_default=True, help="Comma-separated proxy addresses/networks to trust, or '*'.")
@click.option("--proxy-protocol", type=click.Choice(PROXY_PROTOCOL_CHOICES), default="off", show_default=True, help="Expect a PROXY protocol header (v1, v2 or either: auto) on every connection, from --forwarded-allow-ips only.")
@click.option("--timeout-keep-alive", type=float, default=default("timeout_keep_alive"), show_default=True, help="Seconds an idle keep-alive connection stays open.")
@click.option("--timeout-graceful-shutdown", type=float, default=default("timeout_graceful_shutdown"), show_default=True, help="Seconds in-flight requests get to finish on shutdown.")
@click.option("--limit-concurrency", type=int, default=None, help="Requests in flight per worker before answering 503 (default: no limit).")
@click.option("--limit-max-requests", type=int, default=None, help="Recycle a worker after this many requests.")
@click.option("--limit-max-requests-jitter", type=int, default=0, show_default=True, help="Add up to this many requests at random to --limit-max-requests.")
@click.option("--limit-request-line", type=int, default=default("limit_request_line"), show_default=True, help="Longest request target (URL) in bytes; longer gets 414.")
@click.option("--limit-request-fields", type=int, default=default("limit_request_fields"), show_default=True, help="Most header fields in a request; more gets 431.")
@click.option("--limit-request-field-size", type=int, default=default("limit_request_field_size"), show_default=True, help="Longest header field (name + value) in bytes; longer gets 431.")
@click.option("--limit-request-body", type=int, default=None, help="Largest request body in bytes; larger gets 413 (default: no limit).")
@click.option("--timeout-request-header", type=float, default=default("timeout_request_header"), show_default=True, help="Seconds a client gets to send a request's headers; then 408 and close (0: no limit).")
@click.option("--timeout-request-body", type=float, default=default("timeout_request_body"), show_default=True, help="Seconds an upload may stall without a byte; then it is cut and the app gets http.disconnect (0: no limit).")
@click.option("--timeout-write", type=float, default=default("timeout_write"), show_default=True, help="Seconds a client may stop reading a response; then the connection is cut and send() raises (0: no limit).")
@click.option("--ssl-certfile", default=None, help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", default=None, help="TLS private key (PEM).")
@click.option("--ssl-keyfile-password", default=None, help="Password of the TLS private key.")
@click.option("--ssl-ca-certs", default=None, help="CA certificates for verifying client certificates.")
@click.option("--ssl-cert-reqs", type=click.Choice(tuple(SSL_CERT_REQS)), default="none", show_default=True, help="Client certificate requirement.")
@click.option("--ssl-ciphers", default=default("ssl_ciphers"), show_default=True, help="OpenSSL cipher list.")
@click.option("--header", "headers", multiple=True, envvar="TETHER_HEADER", help="Extra response header NAME:VALUE (repeatable).")
@click.option("--server-header/--no-server-header", default=True, show_default=True, help="Send 'server: tether'.")
@click.option("--date-header/--no-date-header", default=True, show_default=True, help="Send a Date header.")
@click.option("--log-level", type=click.Choice(tuple(LOG_LEVELS)), default="info", show_default=True, help="Log level.")
@click.option("--log-config", default=None, help="Logging configuration file (.json, .yaml or .ini).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One log line per request.")
@click.option("--access-log-format", default=default("access_log_format"), show_default=True, help="str.format template; fields: client request_line method path query_string http_version status bytes duration_ms note.")
@click.option("--metrics/--no-metrics", default=False, show_default=True, help="Serve Prometheus metrics, summed over all workers, on a listener of their own.")
@click.option("--metrics-address", default=default("metrics_address"), show_default=True, help="Address of the metrics listener.")
@click.option("--metrics-port", type=int, default=default("metrics_port"), show_default=True, help="Port of the metrics listener (GET /metrics).")
@click.option("--on-disconnect", type=click.Choice(ON_DISCONNECT_CHOICES), default="notify", show_default=True, help="When the client leaves mid-request: notify the app (http.disconnect), or also cancel its task.")
@click.option("--disconnect-grace", type=float, default=0.0, show_default=True, help="Seconds between the client leaving and the cancel (with --on-disconnect cancel).")
@click.option("--cancel-queries/--no-cancel-queries", default=True, show_default=True, help="When a request's work is stopped, cancel its database queries on the server too (SQLAlchemy, psycopg, psycopg2, Django, sqlite3).")
@click.option("--timeout-request", type=float, default=None, help="Seconds a request may wait for its response to start (and a started one may go without sending); then 504 (or a cut) and its work is stopped (default: no limit).")
@click.option("--tcp-keepalive/--no-tcp-keepalive", default=True, show_default=True, help="TCP keep-alive probes, to notice peers that vanished without FIN/RST.")
@click.option("--tcp-keepalive-idle", type=int, default=default("tcp_keepalive_idle"), show_default=True, help="Idle seconds before the first keep-alive probe.")
@click.option("--tcp-keepalive-interval", type=int, default=default("tcp_keepalive_interval"), show_default=True, help="Seconds between keep-alive probes.")
@click.option("--tcp-keepalive-count", type=int, default=default("tcp_keepalive_count"), show_default=True, help="Unanswered probes before the peer is declared gone.")
@click.option("--http", type=click.Choice(HTTP_CHOICES), default="auto", show_default=True, help="HTTP versions: auto (1.1, h2c, h2 by ALPN), 1 (HTTP/1.1 only) or 2 (HTTP/2 only).")
@click.option("--h2-max-concurrent-streams", type=int, default=default("h2_max_concurrent_streams"), show_default=True, help="HTTP/2 streams a client may have open; more are refused (REFUSED_STREAM).")
@click.option("--h2-max-header-list-size", type=int, default=default("h2_max_header_list_size"), show_default=True, help="Largest HTTP/2 header list accepted, in bytes (decoded).")
@click.option("--h2-initial-window-size", type=int, default=default("h2_initial_window_size"), show_default=True, help="HTTP/2 flow-control window per stream: request body bytes buffered before the app reads.")
@click.option("--h2-max-frame-size", type=int, default=default("h2_max_frame_size"), show_default=True, help="Largest HTTP/2 frame payload accepted.")
@click.option("--h2-ping-interval", type=float, default=default("h2_ping_interval"), show_default=True, help="Seconds between server PINGs on an HTTP/2 connection (0: no pings).")
@click.option("--h2-ping-timeout", type=float, default=default("h2_ping_timeout"), show_default=True, help="Seconds to wait for a PING ACK before the peer is declared gone (0: wait forever).")
@click.option("--ws", type=click.Choice(WS_CHOICES), default="auto", show_default=True, help="WebSocket support (none: upgrade requests get 400).")
@click.option("--ws-max-size", type=int, default=default("ws_max_size"), show_default=True, help="Largest incoming WebSocket message in bytes; a bigger one closes with 1009.")
@click.option("--ws-max-queue", type=int, default=default("ws_max_queue"), show_default=True, help="Incoming WebSocket messages queued for the app before reading pauses.")
@click.option("--ws-ping-interval", type=float, default=default("ws_ping_interval"), show_default=True, help="Seconds between server pings on an open WebSocket (0: no pings).")
@click.option("--ws-ping-timeout", type=float, default=default("ws_ping_timeout"), show_default=True, help="Seconds to wait for a pong before the peer is declared gone (0: wait forever).")
@click.option("--ws-per-message-deflate/--no-ws-per-message-deflate", default=True, show_default=True, help="Offer permessage-deflate compression to WebSocket clients.")
@click.option("--ws-close-timeout", type=float, default=default("ws_close_timeout"), show_default=True, help="Seconds to wait for the peer's close frame after sending ours.")
@click.option("--workers-lifetime", type=float, default=None, help="Replace each worker gracefully after at most this many seconds (spread across workers; runs the supervisor).")
@click.option("--workers-max-rss", type=int, default=None, help="Replace a worker gracefully once its resident memory exceeds this many MiB (checked every second; runs the supervisor).")
@click.version_option(__version__, "--version", prog_name="tether", message="%(prog)s %(version)s")
def cli(**options: Any) -> int:
    """Serve the ASGI application APP ("module:attribute"), or a demo app if APP is omitted."""
    from .server import run_config

    for name in ("reload_dirs", "reload_includes", "reload_excludes", "headers"):
        options[name] = list(options[name])
    config = Config.from_options(**options)
    return run_config(config)


def main(args: list[str] | None = None) -> None:
    try:
        code = cli.main(args=args, prog_name="tether", auto_envvar_prefix="TETHER", standalone_mode=False)
    except click.exceptions.Abort:
        code = 1
    except click.ClickException as exc:
        click.echo(f"tether: error: {exc.format_message()}", err=True)
        code = exc.exit_code or 2
    except ConfigError as exc:
        click.echo(f"tether: error: {exc}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def options_from_environment() -> dict[str, Any]:
    """The options given as TETHER_<OPTION> environment variables, parsed and checked exactly as
    the command line parses them; for servers that start Tether without its command line (the
    Gunicorn worker, tether.workers). A bad value is a ConfigError naming the variable."""
    from click.core import ParameterSource

    try:
        ctx = cli.make_context("tether", [], auto_envvar_prefix="TETHER")
    except click.BadParameter as exc:
        param = exc.param
        name = param.envvar if param is not None and isinstance(param.envvar, str) else None
        name = name or (f"TETHER_{param.name.upper()}" if param is not None and param.name else "TETHER_*")
        raise ConfigError(f"{name}: {exc.message}") from None
    except click.ClickException as exc:
        raise ConfigError(f"TETHER_* environment: {exc.format_message()}") from None
    options = {}
    for name, value in ctx.params.items():
        if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
            options[name] = list(value) if isinstance(value, tuple) else value
    return options
