"""What the app saw, and when: a ``Probe`` shared by the server thread (the app marks events) and
the test thread (it waits for them and compares their times with the moment the client left).

Times are ``time.monotonic()``, comparable across threads. An event keeps the time and the value
of its first mark, and counts every mark.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Probe:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.times: dict[str, float] = {}
        self.values: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def mark(self, name: str, value: Any = None) -> None:
        with self._cond:
            self.counts[name] = self.counts.get(name, 0) + 1
            if name not in self.times:
                self.times[name] = time.monotonic()
                self.values[name] = value
            self._cond.notify_all()

    def seen_within(self, name: str, timeout: float) -> bool:
        """Whether ``name`` is marked within ``timeout`` seconds (for what may rightly not happen)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while name not in self.times:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait(self, name: str, timeout: float = 5.0) -> float:
        """The time of ``name``'s first mark, once there is one; AssertionError after ``timeout``."""
        if not self.seen_within(name, timeout):
            with self._cond:
                seen = sorted(self.times)
            raise AssertionError(f"the app never reported {name!r} within {timeout} s (saw {seen})")
        return self.times[name]

    def wait_value(self, name: str, timeout: float = 5.0) -> Any:
        """The value of ``name``'s first mark, once there is one; AssertionError after ``timeout``."""
        self.wait(name, timeout)
        return self.values[name]

    def wait_count(self, name: str, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.counts.get(name, 0) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{name!r} reported {self.counts.get(name, 0)} times, expected {count}")
                self._cond.wait(left)

    def count(self, name: str) -> int:
        with self._cond:
            return self.counts.get(name, 0)

    def __contains__(self, name: str) -> bool:
        with self._cond:
            return name in self.times

    def value(self, name: str) -> Any:
        with self._cond:
            return self.values[name]

    def since(self, name: str, start: float) -> float:
        """Milliseconds from ``start`` (a monotonic time) to the first mark of ``name``."""
        with self._cond:
            return (self.times[name] - start) * 1000
