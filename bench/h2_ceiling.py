"""The HTTP/2 ceiling of a server built on the `h2` library: the library's own server-side cost
per request, with no sockets, no event loop and no ASGI.

    bench/.venv-3.11/bin/python bench/h2_ceiling.py

A client H2Connection writes batches of 10 GET requests (as `h2load -m 10` does); Tether's own
server connection (``server_connection`` with the default --h2-* options: its HPACK caches,
frame buffer and settings included) parses them and answers each with a HEADERS frame and a 13-byte DATA frame, as
bench/apps/throughput_app.py's /hello does. Only the server side is timed. Whatever an ASGI
server does around h2 (socket I/O, the event loop, a task per request, the app) comes on top,
so 1e6 / (this many µs) is a hard upper bound on one worker's h2c req/s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

# (sys.path[0] is bench/, whose h2.py would shadow the h2 package)
sys.path[0] = str(Path(__file__).resolve().parent.parent / "src")

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from tether.config import Config  # noqa: E402
from tether.protocols.http2 import server_connection  # noqa: E402
from tether.server.state import HTTP2Settings  # noqa: E402

REQUEST = [(b":method", b"GET"), (b":path", b"/hello"), (b":scheme", b"http"),
           (b":authority", b"127.0.0.1:8000"), (b"user-agent", b"h2load nghttp2/1.52.0")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"13"),
            (b"date", b"Mon, 30 Nov 2026 07:00:00 GMT")]
BATCH = 10


def connected_pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    server = server_connection(HTTP2Settings(Config()))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def one_batch(client: h2.connection.H2Connection, server: h2.connection.H2Connection) -> float:
    """Seconds the server side spent on BATCH requests."""
    for _ in range(BATCH):
        client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
    wire = client.data_to_send()
    started = time.perf_counter()
    for event in server.receive_data(wire):
        if isinstance(event, h2.events.RequestReceived):
            server.send_headers(event.stream_id, RESPONSE)
            server.send_data(event.stream_id, b"Hello, world!", end_stream=True)
    answer = server.data_to_send()
    spent = time.perf_counter() - started
    for event in client.receive_data(answer):
        if isinstance(event, h2.events.DataReceived):
            client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    started = time.perf_counter()
    server.receive_data(client.data_to_send())  # the client's WINDOW_UPDATEs are server work too
    return spent + time.perf_counter() - started


def main() -> int:
    runs = []
    for _ in range(5):
        client, server = connected_pair()
        for _ in range(200):  # warm-up: the HPACK tables and caches fill
            one_batch(client, server)
        batches = 2000
        runs.append(sum(one_batch(client, server) for _ in range(batches)) / (batches * BATCH) * 1e6)
    per_request = statistics.median(runs)
    print(f"h2 server side: {per_request:.1f} µs per request (median of {len(runs)} runs: "
          f"{', '.join(f'{r:.1f}' for r in runs)}); at most {1e6 / per_request:.0f} req/s per worker")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
