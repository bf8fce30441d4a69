"""Worker recycling rules: when a worker's lifetime ends, and how much memory it holds.

``--workers-lifetime L`` gives every worker a deadline at most L seconds after it started. With N
workers started together (at boot, after SIGHUP or a reload) a deadline of exactly L each would
replace them all in one burst, so deadlines are *spread*: a new worker's deadline is moved
earlier, if need be, so that it falls at least L/N from every other worker's. Workers started
together are then replaced L/N apart (4 workers, 3600 s: one every 15 minutes, the first after 15
minutes), and each replacement, started L/N after the previous one, keeps the spacing.

Random jitter (as ``--limit-max-requests-jitter`` adds) can still put two workers on the same
second; the spread cannot, as long as there is room for it (it is best effort when workers that
died and were restarted at odd times leave no gap of L/N: then the deadline farthest from the
others is taken).

``--workers-max-rss`` compares the resident set size, as ``ps`` shows it (shared pages
included), read from ``/proc/<pid>/statm``: no dependency, a few microseconds per worker.
"""

from __future__ import annotations

import os

RSS_CHECK_INTERVAL = 1.0  # seconds between two looks at the workers' memory
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def spread_deadline(now: float, lifetime: float, workers: int, others: list[float]) -> float:
    """The recycle deadline of a worker starting at ``now``, given the other workers' deadlines.

    At most ``now + lifetime`` and at least ``now + lifetime / workers``; as far as possible at
    least ``lifetime / workers`` from every deadline in ``others``.
    """
    latest = now + lifetime
    if not others:
        return latest
    gap = lifetime / max(workers, 1)
    earliest = now + gap
    ordered = sorted(others)
    candidates = [earliest, latest, *(d - gap for d in ordered), *(d + gap for d in ordered),
                  *((a + b) / 2 for a, b in zip(ordered, ordered[1:]))]
    candidates = [c for c in candidates if earliest <= c <= latest]

    def distance(candidate: float) -> float:
        return min(min(abs(candidate - d) for d in ordered), gap)

    # The latest spot at least a gap from every other deadline, when there is one: it is either
    # the latest allowed or exactly a gap before another deadline (else it could move later).
    # Without one, the spot farthest from the others: an end of the range, a gap from a
    # deadline, or half-way between two.
    return max(candidates, key=lambda c: (distance(c), c))


def rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB, or None if it cannot be read (it exited)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * PAGE_SIZE / (1024 * 1024)
