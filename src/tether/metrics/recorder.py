"""The worker side of --metrics: what a worker counts, and the block of memory it publishes in.

A worker's block holds 64-bit integers (``Recorder.ints``) and, after them, float sums of
seconds (``Recorder.floats``), each value at a fixed index. Under the supervisor the block is
an anonymous shared mapping the supervisor made before the fork, so the supervisor reads what
the worker publishes and still has it after the worker is gone (``totals.Totals``); a single
process uses a private buffer.

A request costs two additions to plain Python lists (``request_done``): its own counter,
indexed by protocol, status class *and* duration bucket (``requests_total`` sums the buckets,
the histogram sums the classes), and its protocol's sum of seconds. The lists are copied into
the block once a second (``tick``) and when the worker stops (``flush``): writing the shared
memory itself on every request cost three times as much, as a memoryview's item assignment
does far more than a list's. So a worker that dies without stopping (SIGKILL, a crash) takes
at most its last second of request counts with it; what it published stays counted. The rarer
events (disconnects, abandoned and cancelled requests, deadlines) go to the block at once.
"""

from __future__ import annotations

import mmap
from array import array
from bisect import bisect_left

PROTOCOLS = ("http1", "http2", "websocket")
HTTP_PROTOCOLS = PROTOCOLS[:2]  # (the duration histogram: a WebSocket session has no "duration")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "499")
PHASES = ("mid_body", "before_response", "mid_stream", "websocket")  # = logs.PHASES
# Upper bounds (seconds) of the duration histogram, +Inf last: from a fast in-memory answer
# (~0.1 ms here) to long polls.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EXIT_REASONS = ("", "max_requests")  # why a worker left on its own (EXIT_REASON), read by the supervisor

ABANDONED = 0  # the status given for a request whose client left before the response was complete
NB = len(BUCKETS) + 1
NC = len(STATUS_CLASSES)

# ---- integers; [0, COUNTERS) are counters, added to the totals when a worker exits
REQUESTS = 0                                    # [protocol][status class][bucket] (WebSocket: bucket 0)
DISCONNECTS = REQUESTS + len(PROTOCOLS) * NC * NB  # [phase]
ABANDONED_REQUESTS = DISCONNECTS + len(PHASES)
CANCELLED_REQUESTS = ABANDONED_REQUESTS + 1
DEADLINE_TIMEOUTS = CANCELLED_REQUESTS + 1
COUNTERS = DEADLINE_TIMEOUTS + 1
# gauges, sampled once a second by the worker (Recorder.tick): only live workers count
IN_FLIGHT = COUNTERS
CONNECTIONS = IN_FLIGHT + 1                     # [protocol]
EXIT_REASON = CONNECTIONS + len(PROTOCOLS)      # index into EXIT_REASONS
INTS = EXIT_REASON + 1
# ---- floats: counters of seconds
DURATION_SUM = 0                                # [http protocol]
ABANDONED_SECONDS = DURATION_SUM + len(HTTP_PROTOCOLS)
FLOATS = ABANDONED_SECONDS + 1
SLOT_BYTES = (INTS + FLOATS) * 8


def request_index(protocol: int, status_class: int, bucket: int) -> int:
    return REQUESTS + (protocol * NC + status_class) * NB + bucket


_PHASE_INDEX = {phase: DISCONNECTS + i for i, phase in enumerate(PHASES)}
# status (0..599) -> where its bucket 0 is in Recorder.requests, per protocol: one tuple lookup.
_CLASS = tuple(status // 100 - 1 if status >= 100 else STATUS_CLASSES.index("499") for status in range(600))
_HTTP1, _HTTP2, _WEBSOCKET = (tuple(request_index(p, c, 0) - REQUESTS for c in _CLASS) for p in range(len(PROTOCOLS)))


def new_slot() -> mmap.mmap:
    """Zeroed memory for one worker's values, shared with the processes forked after this."""
    return mmap.mmap(-1, SLOT_BYTES)  # anonymous, MAP_SHARED


def views(memory: object) -> tuple[memoryview, memoryview]:
    """The (integers, floats) of a slot's memory (an mmap or a bytearray)."""
    raw = memoryview(memory)  # type: ignore[arg-type]
    return raw[:INTS * 8].cast("q"), raw[INTS * 8:SLOT_BYTES].cast("d")


class Recorder:
    """This process's metric values. ``enabled`` is False unless --metrics is on: the call
    sites test it first, so that metrics off costs one attribute read per request."""

    __slots__ = ("enabled", "supervised", "ints", "floats", "requests", "sums", "kinds", "http2_type",
                 "websocket_type")

    def __init__(self) -> None:
        self.enabled = False
        self.supervised = False  # True in a worker whose slot the supervisor made and exports
        self.ints, self.floats = views(bytearray(SLOT_BYTES))
        self.requests = [0] * (DISCONNECTS - REQUESTS)  # (published to ints[REQUESTS:DISCONNECTS])
        self.sums = [0.0] * len(HTTP_PROTOCOLS)  # (published to floats[DURATION_SUM:...])
        self.kinds: dict = {}  # connection type -> protocol index (0, the default, is HTTP/1.1)
        self.http2_type: type | None = None  # what a request's conn is on HTTP/2 (H2Stream) ...
        self.websocket_type: type | None = None  # ... and a WebSocket session's

    def attach(self, memory: object, supervised: bool) -> None:
        from ..protocols.http2 import H2Protocol, H2Stream
        from ..protocols.websocket import WebSocketProtocol

        self.kinds = {H2Stream: 1, H2Protocol: 1, WebSocketProtocol: 2}
        self.http2_type, self.websocket_type = H2Stream, WebSocketProtocol
        self.ints, self.floats = views(memory)
        self.requests = [0] * (DISCONNECTS - REQUESTS)
        self.sums = [0.0] * len(HTTP_PROTOCOLS)
        self.supervised = supervised
        self.enabled = True

    def detach(self) -> None:
        self.flush()
        self.enabled = False
        self.supervised = False
        self.ints, self.floats = views(bytearray(SLOT_BYTES))

    # ------------------------------------------------------------------ the hot path
    def request_done(self, conn: object, status: int, seconds: float) -> None:
        """A scope on ``conn`` ended after ``seconds``: an HTTP request answered with
        ``status`` (or ABANDONED by its client), or a WebSocket session whose handshake was
        answered with ``status`` (101: accepted; 1006, no answer: the client left first)."""
        kind = type(conn)
        if kind is self.http2_type:
            self.requests[_HTTP2[status] + bisect_left(BUCKETS, seconds)] += 1
            self.sums[1] += seconds
        elif kind is self.websocket_type:
            self.requests[_WEBSOCKET[status if status < 600 else ABANDONED]] += 1
        else:
            self.requests[_HTTP1[status] + bisect_left(BUCKETS, seconds)] += 1
            self.sums[0] += seconds

    def flush(self) -> None:
        """Publish the request counts in the block (they only grow: a reader never sees one
        go down, even in the middle of a copy)."""
        self.ints[REQUESTS:DISCONNECTS] = array("q", self.requests)
        self.floats[DURATION_SUM:DURATION_SUM + len(HTTP_PROTOCOLS)] = array("d", self.sums)

    # ------------------------------------------------------------------ rarer events (to the block at once)

    def disconnected(self, phase: str) -> None:
        self.ints[_PHASE_INDEX[phase]] += 1

    def abandoned(self, seconds: float, cancelled: bool) -> None:
        self.ints[ABANDONED_REQUESTS] += 1
        self.floats[ABANDONED_SECONDS] += seconds
        if cancelled:
            self.ints[CANCELLED_REQUESTS] += 1

    def deadline_timeout(self) -> None:
        self.ints[DEADLINE_TIMEOUTS] += 1

    def exiting(self, reason: str) -> None:
        """Tell the supervisor why this worker is about to exit on its own."""
        self.ints[EXIT_REASON] = EXIT_REASONS.index(reason)

    def tick(self, state: object) -> None:
        """Once a second, from the worker's loop: publish the counts, and sample requests in
        flight and connections open."""
        self.flush()
        kinds = self.kinds
        counts = [0, 0, 0]
        for conn in state.connections:  # type: ignore[attr-defined]
            counts[kinds.get(type(conn), 0)] += 1
        ints = self.ints
        ints[IN_FLIGHT] = state.in_flight  # type: ignore[attr-defined]
        for i, count in enumerate(counts):
            ints[CONNECTIONS + i] = count


METRICS = Recorder()
