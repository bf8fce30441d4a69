"""A client that leaves, and the check that the app learned of it at once.

A client leaves with a FIN (``close()``) or an RST (``SO_LINGER {1, 0}`` then ``close()``);
``close_kinds`` runs a test once with each. The app reports what it saw through a ``Probe``;
``assert_prompt`` compares that time with the moment the client hung up. The 1 s bound is
generous on purpose (loopback delivers FIN/RST in microseconds): a server that only notices when
the app finishes, or on the next read, fails it by seconds.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.support.probe import Probe

WITHIN = 1.0  # seconds: the generous bound for "the app learns at once"
HOWS = ("fin", "rst")
close_kinds = pytest.mark.parametrize("how", HOWS)


def hang_up(sock: socket.socket, how: str = "fin") -> float:
    """Close like a client that leaves: "fin" (plain close) or "rst" (abortive close); returns when."""
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        assert how == "fin"
    left = time.monotonic()  # before close(): on loopback the server may react before it returns
    sock.close()
    return left


def assert_prompt(probe: Probe, name: str, left_at: float, within: float = WITHIN) -> float:
    """The app reported ``name`` less than ``within`` seconds after the client left."""
    seen = probe.wait(name, timeout=within + 4)
    delay = seen - left_at
    assert delay < within, f"the app saw {name!r} {delay * 1000:.0f} ms after the client left (limit {within * 1000:.0f} ms)"
    return delay
