"""Keep-alive ping timing (tether.protocols.keepalive.Pinger), without sockets or an event loop:
a manual clock stands in for the loop's call_later. The wire side is tested in
test_h2_functional.py (PING timeout) and test_ws_vanished_peer.py (a peer whose link is cut)."""

from __future__ import annotations

import heapq
import itertools

from tether.protocols.keepalive import Pinger


class Clock:
    """call_later and time, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list = []
        self.order = itertools.count()

    def call_later(self, delay: float, callback):
        handle = Handle()
        heapq.heappush(self.timers, (self.now + delay, next(self.order), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.timers and self.timers[0][0] <= end:
            when, _, handle, callback = heapq.heappop(self.timers)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = end

    def pending(self) -> int:
        return sum(not handle.cancelled for _, _, handle, _ in self.timers)


class Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Peer:
    """The connection's side: records pings sent and timeouts; can refuse to send (closed)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.timeouts: list[float] = []
        self.open = True

    def pinger(self, clock: Clock, interval: float, timeout: float) -> Pinger:
        def send(payload: bytes) -> bool:
            if self.open:
                self.sent.append((clock.now, payload))
            return self.open

        return Pinger(clock, interval, timeout, 8, send, lambda: self.timeouts.append(clock.now))


def test_a_ping_every_interval_while_the_peer_answers() -> None:
    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=5)
    pinger.start()
    for _ in range(3):
        clock.advance(10)
        when, payload = peer.sent[-1]
        assert when == clock.now and len(payload) == 8
        clock.advance(1)
        pinger.answered(payload)
    assert [when for when, _ in peer.sent] == [10, 21, 32]  # the next ping is timed from the answer
    clock.advance(14.9)  # the fourth ping (at 43) is not answered: timeout 5 s after it, not before
    assert peer.timeouts == []
    clock.advance(0.2)
    assert peer.timeouts == [48]


def test_no_answer_within_the_timeout_means_the_peer_is_gone() -> None:
    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=5)
    pinger.start()
    clock.advance(14.9)
    assert len(peer.sent) == 1 and peer.timeouts == []
    clock.advance(0.2)
    assert peer.timeouts == [15]
    clock.advance(100)
    assert len(peer.sent) == 1 and peer.timeouts == [15]  # no more pings after the verdict


def test_an_answer_with_another_payload_does_not_count() -> None:
    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=5)
    pinger.start()
    clock.advance(10)
    pinger.answered(b"\x00" * 8 if peer.sent[0][1] != b"\x00" * 8 else b"\x01" * 8)  # unsolicited
    clock.advance(5)
    assert peer.timeouts == [15]


def test_without_a_timeout_pings_keep_their_interval_and_never_time_out() -> None:
    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=0)
    pinger.start()
    clock.advance(35)
    assert [when for when, _ in peer.sent] == [10, 20, 30]
    pinger.answered(peer.sent[-1][1])  # an answer does not reschedule anything
    clock.advance(10)
    assert [when for when, _ in peer.sent] == [10, 20, 30, 40] and peer.timeouts == []


def test_stop_and_a_closed_connection_end_the_pings() -> None:
    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=5)
    pinger.start()
    clock.advance(10)
    pinger.stop()
    clock.advance(100)
    assert len(peer.sent) == 1 and peer.timeouts == [] and clock.pending() == 0

    clock, peer = Clock(), Peer()
    pinger = peer.pinger(clock, interval=10, timeout=0)
    pinger.start()
    peer.open = False
    clock.advance(100)
    assert peer.sent == [] and peer.timeouts == [] and clock.pending() == 0


def test_an_interval_of_zero_disables_pings() -> None:
    clock, peer = Clock(), Peer()
    peer.pinger(clock, interval=0, timeout=5).start()
    clock.advance(100)
    assert peer.sent == [] and clock.pending() == 0
