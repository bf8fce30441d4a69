"""The issue-14 harness's own logic, without servers or PostgreSQL: events files, the query
marker, what an abandoned request reports, bad output, thread counts and bench/abandoned.py's table."""

from __future__ import annotations

import os
import threading

import pytest

from bench.abandoned import command, markdown, seconds_cell
from tests.stacks import MARKER, STACKS, Abandoned, Events, bad_output, new_id, thread_count


def test_events_file_round_trip(tmp_path, monkeypatch):
    from tests.apps.stacks import _record

    path = tmp_path / "events"
    monkeypatch.setenv("STACKS_EVENTS", str(path))
    events = Events(path)
    _record.record("start", "r1")
    _record.record("end", "r1", "completed after\n1.000s")
    _record.record("warning", "-", "SAWarning: non-checked-in")
    assert [e.name for e in events.read()] == ["start", "end", "warning"]
    end = events.first("end", "r1")
    assert end is not None and end.pid == os.getpid() and end.detail == "completed after 1.000s"
    assert events.first("end", "r2") is None
    assert events.wait("end", "r2", 0.05) is None
    assert events.warnings() == ["warning: SAWarning: non-checked-in"]
    assert events.warnings(since=end.time + 3600) == []


def test_sleep_sql_names_the_request_and_refuses_bad_ids():
    from tests.apps.stacks import _record

    sql = _record.sleep_sql("abc-1", 20)
    assert sql == "SELECT pg_sleep(20.0) /* stacks:abc-1 */"
    assert MARKER.search(sql).group(1) == "abc-1"
    with pytest.raises(ValueError):
        _record.sleep_sql("x */ SELECT 1; --", 1)
    with pytest.raises(ValueError):
        _record.seconds("-1")
    assert MARKER.search(_record.sleep_sql(new_id("a b/c"), 1))


def test_abandoned_reports_what_ran_on():
    a = Abandoned("s", "r", sent=10.0, started=10.1, left=10.3, ended=10.35, limit=1.5)
    assert a.ran_on == pytest.approx(0.05) and a.describe() == "ran on 50 ms after the client left"
    assert Abandoned("s", "r", 10.0, 10.1, 10.3, None, 1.5).describe() == "still running 1.5 s after the client left"
    assert Abandoned("s", "r", 10.0, None, 10.3).describe() == "the work never started"
    # An end seen before the leave (the work finished first) is not a negative time.
    assert Abandoned("s", "r", 10.0, 10.1, 10.3, 10.2).ran_on == 0.0


def test_bad_output_finds_error_level_lines_only():
    text = ("2026-01-01 INFO    tether.error: Tether running\n"
            "Traceback (most recent call last):\n"
            "ERROR asyncio: Task exception was never retrieved\n"
            "127.0.0.1 - \"GET /sleep HTTP/1.1\" 499 0 301.7ms abandoned 1.5ms cancelled\n")
    assert bad_output(text) == ["Traceback (most recent call last):", "ERROR asyncio: Task exception was never retrieved"]
    assert bad_output("") == []


def test_thread_count_sees_a_new_thread():
    before = thread_count(os.getpid())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert thread_count(os.getpid()) == before + 1
    finally:
        stop.set()
        thread.join()


def test_every_stack_app_names_its_connections():
    names = [s.app_name for s in STACKS.values() if s.app_name]
    assert len(names) == len(set(names)), "two stacks share an application_name"
    assert all(name.startswith("stacks-") for name in names)


def test_bench_commands_and_table():
    cmd, port_args = command("gunicorn-grace0", "stacks.x:app")
    assert cmd[1:3] == ["-k", "asgi"] and cmd[-2:] == ["--asgi-disconnect-grace-period", "0"]
    assert port_args(8000) == ["-b", "127.0.0.1:8000"]
    cmd, port_args = command("tether-cancel", "stacks.x:app")
    assert "--on-disconnect" in cmd and cmd[cmd.index("--on-disconnect") + 1] == "cancel"
    with pytest.raises(ValueError):
        command("nginx", "x:app")
    row = {"stack": "cpu", "server": "uvicorn", "started": True, "ran_on": 19.71, "limit": 25.0, "error_lines": 0}
    assert seconds_cell(row) == "19.7 s"
    assert seconds_cell({**row, "ran_on": 0.0213}) == "0.02 s"
    assert seconds_cell({**row, "ran_on": None}) == "> 25 s"
    assert seconds_cell({**row, "started": False}) == "not started"
    assert seconds_cell({**row, "error_lines": 2}) == "19.7 s (2 error lines)"
    assert seconds_cell(None) == "—"
    table = markdown([row], {"uvicorn": {"many_def": {"peak_threads": 41, "baseline_threads": 1, "peak_backends": 40,
                                                      "next_status": 200}}}, ["uvicorn", "granian"])
    lines = table.splitlines()
    assert lines[0] == "| stack | uvicorn | granian |"
    assert lines[2] == f"| {STACKS['cpu'].title} | 19.7 s | — |"
    assert "| 40 / 40, 200 | — |" in lines[3]
