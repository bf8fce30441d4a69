"""--workers-lifetime and --workers-max-rss: real supervisors, real workers, requests over real
sockets while workers are replaced; and the deadline spread rule on its own."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.http1 import RequestLoop, raw_request
from tests.support.process import assert_one_error_line, pid_alive, run_api, run_cli, running
from tests.support.waiting import free_port, wait_until
from tether.server.recycling import rss_mib, spread_deadline

pytestmark = pytest.mark.timeout(90)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ChildWatcher:
    """Polls a supervisor's children every 10 ms: when each pid first appeared (by its start time
    in /proc, to the clock tick) and when it was last seen alive."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.started: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for pid in self.srv.children():
                if pid not in self.started:
                    try:
                        with open(f"/proc/{pid}/stat") as fh:
                            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
                        self.started[pid] = ticks / CLOCK_TICKS
                    except (OSError, IndexError, ValueError):
                        pass
            time.sleep(0.01)

    def __enter__(self) -> "ChildWatcher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)


def slow_requests(port: int) -> RequestLoop:
    """Requests that take 0.4 s each, one after another, so that some are always in flight."""
    return RequestLoop(port, "/sleep?s=0.4", timeout=10, pause=0)


def answering_pids(port: int, want: set[int], attempts: int = 200) -> set[int]:
    """Requests 4 at a time, each blocking its worker for 10 ms (so that the next goes to another
    worker), until every pid in ``want`` has answered or the attempts are used up."""
    seen: set[int] = set()
    get_pid = lambda _: json.loads(raw_request(port, path="/block?s=0.01")[2])["pid"]  # noqa: E731
    with ThreadPoolExecutor(4) as pool:
        for _ in range(attempts // 4):
            seen.update(pool.map(get_pid, range(4)))
            if want <= seen:
                break
    return seen


def recycle_lines(out: str, reason: str = "") -> list[str]:
    return [line for line in out.splitlines() if "Recycling worker" in line and reason in line]


# ---------------------------------------------------------------------- --workers-lifetime
def test_lifetime_replaces_workers_one_at_a_time_without_failed_requests():
    with running("recycle_apps:app", "--workers", "2", "--workers-lifetime", "2", "--no-access-log", ready=2) as srv:
        first = set(srv.worker_pids())
        with ChildWatcher(srv) as children, RequestLoop(srv.port) as fast, slow_requests(srv.port) as slow:
            # Lifetimes 1 s and 2 s at first, then one replacement a second: wait for 5 of them.
            srv.wait_for("Recycling worker", count=5, timeout=20)
            wait_until(lambda: not any(pid_alive(pid) for pid in first), 10, "the first workers gone", interval=0.05)
            served = fast.ok
            wait_until(lambda: fast.ok >= served + 20, 10, "20 more requests served", interval=0.05)
        out = srv.output()
        assert fast.failures == [] and slow.failures == [], (fast.failures[:5], slow.failures[:5])
        assert fast.ok > 100 and slow.ok >= 8, (fast.ok, slow.ok)
        # Pids changed, and the requests were served by old and new workers alike.
        assert len(set(fast.pids)) >= 5 and set(fast.pids) & first and set(fast.pids) - first
        # Each recycle says why, and one by one: the replacements started about 1 s apart
        # (the 2 s lifetime spread over 2 workers), never together.
        lines = recycle_lines(out, "it reached --workers-lifetime (2 s, up ")
        assert len(lines) >= 5, out
        replacements = sorted(t for pid, t in children.started.items() if pid not in first)
        assert len(replacements) >= 5, children.started
        gaps = [b - a for a, b in zip(replacements, replacements[1:])]
        assert min(gaps) >= 0.5, gaps
        # Never more than one extra worker at a time (the new one, before the old one stops).
        assert len(srv.children()) in (2, 3)
        assert "died" not in out and "killing" not in out and "did not start" not in out, out


def test_lifetime_with_one_worker_runs_the_supervisor_and_replaces_it_gracefully():
    with running("recycle_apps:app", "--workers-lifetime", "1.5", "--no-access-log") as srv:
        out = srv.wait_for("Supervisor (pid")
        assert "Recycling each worker after at most 1.5 s" in out
        first = srv.worker_pids()[0]
        assert first != srv.pid and srv.children() == {first}
        with RequestLoop(srv.port) as fast, slow_requests(srv.port) as slow:
            srv.wait_for("Recycling worker", count=2, timeout=15)
            srv.wait_ready(3, timeout=15)
            wait_until(lambda: not pid_alive(first), 10, "the first worker gone", interval=0.05)
            served = fast.ok
            wait_until(lambda: fast.ok >= served + 10, 10, "10 more requests served", interval=0.05)
        # With a single worker too, the new one serves before the old one stops: nothing fails.
        assert fast.failures == [] and slow.failures == [], (fast.failures[:5], slow.failures[:5])
        assert len(set(fast.pids)) >= 2
        line = recycle_lines(srv.output())[0]
        assert re.search(rf"Recycling worker {first}: it reached --workers-lifetime \(1\.5 s, up 1\.\d s\)", line), line


def test_sighup_during_recycling_shares_the_queue():
    import signal

    with running("recycle_apps:app", "--workers", "2", "--workers-lifetime", "3", "--no-access-log", ready=2) as srv:
        with RequestLoop(srv.port) as fast:
            srv.wait_for("Recycling worker", timeout=10)
            before = set(srv.worker_pids())
            srv.send_signal(signal.SIGHUP)
            srv.wait_for("Received SIGHUP")
            # Every worker alive at the SIGHUP is replaced, one at a time, with the lifetime ones.
            wait_until(lambda: not any(pid_alive(pid) for pid in before), 15,
                       lambda: f"the workers from before gone:\n{srv.output()}", interval=0.05)
            served = fast.ok
            wait_until(lambda: fast.ok >= served + 20, 10, "20 more requests served", interval=0.05)
        out = srv.output()
        assert fast.failures == [], fast.failures[:5]
        assert "did not start" not in out and "killing" not in out and "died" not in out, out
        assert len(srv.children()) in (2, 3)


def test_sigterm_during_a_recycle_stops_everything():
    with running("recycle_apps:app", "--workers", "2", "--workers-lifetime", "1", "--no-access-log", ready=2) as srv:
        srv.wait_for("Recycling worker", count=2, timeout=15)
        workers = set(srv.worker_pids())
        srv.send_signal(15)
        assert srv.wait(15) == 0
        wait_until(lambda: not any(pid_alive(pid) for pid in workers), 5, "every worker gone", interval=0.05)


# ---------------------------------------------------------------------- --workers-max-rss
def test_max_rss_replaces_the_worker_that_grew():
    with running("recycle_apps:app", "--workers", "2", "--workers-max-rss", "80", "--no-access-log", ready=2) as srv:
        out = srv.wait_for("Recycling a worker over 80 MiB of RSS (checked every 1 s)")
        first = set(srv.worker_pids())
        assert "already uses" not in out  # a fresh worker is far below 80 MiB
        with RequestLoop(srv.port) as fast:
            status, _, body = raw_request(srv.port, path="/alloc?mb=100", timeout=10)
            assert status == 200
            big = json.loads(body)["pid"]
            assert rss_mib(big) > 100
            started = time.monotonic()
            out = srv.wait_for(f"Recycling worker {big}: its RSS is", timeout=10)
            assert time.monotonic() - started < 3  # checked every second
            wait_until(lambda: not pid_alive(big), 10, lambda: f"the big worker gone:\n{srv.output()}", interval=0.05)
            served = fast.ok
            wait_until(lambda: fast.ok >= served + 20, 10, "20 more requests served", interval=0.05)
        assert fast.failures == [], fast.failures[:5]
        line = recycle_lines(out)[0]
        assert re.search(r"its RSS is 1\d\d MiB, over --workers-max-rss 80 MiB", line), line
        # Only the worker that grew was replaced.
        assert len(recycle_lines(srv.output())) == 1
        (other,) = first - {big}
        live = srv.children()
        assert other in live and big not in live and len(live) == 2
        assert answering_pids(srv.port, live) == live  # the replacement serves, beside the other one


def test_max_rss_below_a_fresh_worker_warns_instead_of_looping():
    with running("recycle_apps:app", "--workers", "2", "--workers-max-rss", "1", "--no-access-log", ready=2) as srv:
        out = srv.wait_for("when it starts, over --workers-max-rss 1 MiB", count=2)
        first = set(srv.worker_pids())
        time.sleep(2.5)
        assert srv.children() == first
        assert recycle_lines(srv.output()) == []
        assert json.loads(raw_request(srv.port)[2])["pid"] in first
        assert "not recycled for memory" in out


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, fragment", [
    (["--workers-lifetime", "0"], "--workers-lifetime must be more than 0 seconds, not 0"),
    (["--workers-lifetime", "-5"], "--workers-lifetime must be more than 0 seconds, not -5"),
    (["--workers-lifetime", "soon"], "--workers-lifetime"),
    (["--workers-max-rss", "0"], "--workers-max-rss must be at least 1 (MiB), not 0"),
    (["--workers-max-rss", "-1"], "--workers-max-rss must be at least 1 (MiB), not -1"),
    (["--workers-max-rss", "1.5"], "--workers-max-rss"),
])
def test_bad_recycling_options_are_one_line(args, fragment):
    assert_one_error_line(run_cli("recycle_apps:app", *args, "--port", str(free_port())), fragment)


def test_recycling_options_as_environment_variables():
    assert_one_error_line(run_cli("recycle_apps:app", "--port", str(free_port()), env={"TETHER_WORKERS_MAX_RSS": "0"}),
                          "--workers-max-rss must be at least 1")
    with running("recycle_apps:app", env={"TETHER_WORKERS_LIFETIME": "30"}) as srv:
        assert "Recycling each worker after at most 30 s" in srv.wait_for("Supervisor (pid")


def test_recycling_needs_an_import_string():
    result = run_api("workers_lifetime=60")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tether: error: --workers-lifetime and --workers-max-rss need the app as an import string, like 'main:app'"
    ]


# ---------------------------------------------------------------------- the rules, without processes
def test_spread_deadline_spaces_workers_started_together():
    deadlines: list[float] = []
    for i in range(4):
        deadlines.append(spread_deadline(i * 0.01, 3600, 4, deadlines))
    assert sorted(round(d) for d in deadlines) == [900, 1800, 2700, 3600]
    assert all(d <= i * 0.01 + 3600 for i, d in enumerate(deadlines))  # at most the lifetime


def test_spread_deadline_keeps_the_spacing_from_one_replacement_to_the_next():
    deadlines = []
    for i in range(4):
        deadlines.append(spread_deadline(0.0, 100, 4, deadlines))
    for _ in range(12):  # the earliest is replaced at its deadline (plus 0.3 s to start), again and again
        now = min(deadlines) + 0.3
        deadlines.remove(min(deadlines))
        new = spread_deadline(now, 100, 4, deadlines)
        assert new == pytest.approx(now + 100)
        deadlines.append(new)
        ordered = sorted(deadlines)
        assert min(b - a for a, b in zip(ordered, ordered[1:])) >= 25 - 1e-9


def test_spread_deadline_edge_cases():
    assert spread_deadline(10.0, 60, 1, []) == 70.0
    assert spread_deadline(10.0, 60, 3, []) == 70.0
    assert spread_deadline(10.0, 60, 1, [70.0]) == 70.0  # one worker: the gap is the lifetime itself
    # Crowded (a restarted worker among others): the spot farthest from them, within the range.
    crowded = spread_deadline(0.0, 60, 3, [25.0, 40.0])
    assert 20.0 <= crowded <= 60.0 and crowded == 60.0
    assert spread_deadline(0.0, 60, 3, [59.0, 21.0]) == pytest.approx(40.0)


def test_rss_mib_reads_proc():
    mine = rss_mib(os.getpid())
    assert mine is not None and mine > 5
    block = b"\x01" * (50 * 1024 * 1024)
    assert rss_mib(os.getpid()) >= mine + 45
    del block
    assert rss_mib(2**22 + 12345) is None  # no such process
