"""The /metrics listener: prometheus_client renders ``Totals`` and serves them from a thread.

prometheus_client's own HTTP server (``start_http_server``: a WSGI server in a daemon thread)
answers on the --metrics-address/--metrics-port listener, negotiating the text format 0.0.4 or
OpenMetrics from the scraper's Accept header. It runs beside the event loop (a single process)
or beside the supervisor's loop (``--workers N``), so a blocked worker loop or a busy
supervisor does not stop a scrape.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily as Counter
from prometheus_client.core import GaugeMetricFamily as Gauge
from prometheus_client.core import HistogramMetricFamily as Histogram
from prometheus_client.utils import floatToGoString

from ..errors import ConfigError
from ..logs import error_logger
from . import recorder as r
from .totals import Totals


class TetherCollector:
    """What /metrics shows, rendered from ``Totals`` at each scrape (names: README "Metrics")."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Any]:
        ints, floats, workers, restarts = self.totals.snapshot()
        per_bucket = {(p, c): ints[r.request_index(p, c, 0):r.request_index(p, c, 0) + r.NB]
                      for p in range(len(r.PROTOCOLS)) for c in range(r.NC)}
        requests = Counter("tether_requests", "Requests ended, by protocol and status class: HTTP responses "
                           "(499: the client left before the response was complete) and WebSocket sessions "
                           "(by the handshake's answer: 1xx is an accepted session)", labels=["protocol", "status_class"])
        for p, protocol in enumerate(r.PROTOCOLS):
            for c, status_class in enumerate(r.STATUS_CLASSES):
                requests.add_metric([protocol, status_class], sum(per_bucket[p, c]))
        yield requests
        duration = Histogram("tether_request_duration_seconds", "HTTP request duration, from the request head "
                             "to the end of the response (or of the app, for a request its client abandoned)",
                             labels=["protocol"])
        bounds = [*r.BUCKETS, math.inf]
        for p, protocol in enumerate(r.HTTP_PROTOCOLS):
            cumulative, buckets = 0, []
            for b, bound in enumerate(bounds):
                cumulative += sum(per_bucket[p, c][b] for c in range(r.NC))
                buckets.append((floatToGoString(bound), cumulative))
            duration.add_metric([protocol], buckets, floats[r.DURATION_SUM + p])
        yield duration
        yield Gauge("tether_requests_in_flight", "HTTP requests and WebSocket sessions whose app is running "
                    "(sampled once a second by each worker)", value=ints[r.IN_FLIGHT])
        connections = Gauge("tether_connections_open", "Client connections open, by protocol (sampled once a "
                            "second by each worker)", labels=["protocol"])
        for p, protocol in enumerate(r.PROTOCOLS):
            connections.add_metric([protocol], ints[r.CONNECTIONS + p])
        yield connections
        disconnects = Counter("tether_disconnects", "Clients that left before their answer was complete, by "
                              "phase (websocket: during a session the app had not closed)", labels=["phase"])
        for i, phase in enumerate(r.PHASES):
            disconnects.add_metric([phase], ints[r.DISCONNECTS + i])
        yield disconnects
        yield Counter("tether_abandoned_requests", "Requests whose app went on after the client left",
                      value=ints[r.ABANDONED_REQUESTS])
        yield Counter("tether_abandoned_work_seconds", "Seconds apps kept working after their client left",
                      value=floats[r.ABANDONED_SECONDS])
        yield Counter("tether_cancelled_requests", "Abandoned requests whose work --on-disconnect cancel stopped",
                      value=ints[r.CANCELLED_REQUESTS])
        yield Counter("tether_deadline_timeouts", "Requests whose --timeout-request deadline passed (answered "
                      "504, or their stalled response cut)", value=ints[r.DEADLINE_TIMEOUTS])
        yield Gauge("tether_workers", "Worker processes alive (1 for a single process)", value=workers)
        restarted = Counter("tether_worker_restarts", "Workers replaced, by reason", labels=["reason"])
        for reason, count in restarts.items():
            restarted.add_metric([reason], count)
        yield restarted


class Exporter:
    """The listener; ``close()`` stops it."""

    def __init__(self, totals: Totals, address: str, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TetherCollector(totals))
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        try:
            self.httpd, self.thread = start_http_server(port, address, registry)
        except OSError as exc:
            raise ConfigError(f"--metrics: could not listen on {where}: {exc.strerror or exc}") from None
        self.port = self.httpd.server_port
        where = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
        error_logger.info("Metrics on http://%s/metrics", where)

    def close_after_fork(self) -> None:
        """In a forked worker: let go of the listening socket (only the supervisor serves it)."""
        self.httpd.socket.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
