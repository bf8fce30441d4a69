"""Seeing FIN and RST on sockets that the event loop is not reading.

When a transport is paused (backpressure on the request body, a pipelined request waiting) the
event loop stops polling its socket, so a client that leaves is not noticed until reading
resumes, which may be never. After a half-close the loop stops reading too, so a later RST
goes unseen. ``HangupWatcher`` keeps its own epoll set, registered for EPOLLRDHUP (peer FIN),
EPOLLHUP and EPOLLERR (RST, or both directions shut) but never for EPOLLIN, so pending request
bytes do not wake it. The epoll descriptor itself is one reader on the event loop, so one
watcher serves every connection of a worker at the cost of one syscall per event.

Linux only: elsewhere ``HangupWatcher.available`` is False and protocols fall back to noticing
the disconnect when reading resumes.
"""

from __future__ import annotations

import select
from typing import Any

_EPOLL = getattr(select, "epoll", None)
FIN = getattr(select, "EPOLLRDHUP", 0x2000)
HUP = getattr(select, "EPOLLHUP", 0x10)
ERR = getattr(select, "EPOLLERR", 0x8)
ONESHOT = getattr(select, "EPOLLONESHOT", 1 << 30)


class HangupWatcher:
    available = _EPOLL is not None

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._owners: dict[int, Any] = {}
        self._epoll = _EPOLL() if _EPOLL is not None else None
        if self._epoll is not None:
            loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, fd: int, owner: Any, fin: bool = True) -> None:
        """Call ``owner.hangup(events)`` once when ``fd`` sees FIN (if ``fin``), HUP or ERR."""
        if self._epoll is None or fd < 0:
            return
        mask = (FIN | HUP | ERR if fin else HUP | ERR) | ONESHOT
        try:
            if fd in self._owners:
                try:
                    self._epoll.modify(fd, mask)
                except FileNotFoundError:  # the fd number was reused: a new socket
                    self._epoll.register(fd, mask)
            else:
                self._epoll.register(fd, mask)
        except OSError:
            return
        self._owners[fd] = owner

    def unwatch(self, fd: int, owner: Any) -> None:
        if self._owners.get(fd) is owner:
            del self._owners[fd]
            try:
                self._epoll.unregister(fd)  # type: ignore[union-attr]
            except OSError:  # already closed: the kernel dropped it from the set
                pass

    def _ready(self) -> None:
        for fd, events in self._epoll.poll(0):  # type: ignore[union-attr]
            owner = self._owners.get(fd)
            if owner is not None:
                owner.hangup(events)

    def close(self) -> None:
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        self._owners.clear()


class PausableReading:
    """Reading that stops for backpressure without going blind: while the transport is paused,
    the worker's HangupWatcher reports the socket's FIN/RST to ``hangup(events)``. The class
    using it has ``transport``, ``settings`` (with ``hangups``), ``fd``, ``read_paused`` and
    ``closed``."""

    __slots__ = ()

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()
            self.settings.hangups.watch(self.fd, self, fin=True)

    def _resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.settings.hangups.unwatch(self.fd, self)
            self.transport.resume_reading()
