"""The chaos soak (tests/soak.py) for 45 s: steady verified load with injected resets, cut uploads,
abandoned streams and slowloris clients, then the leak audit. Deselect with ``-m 'not soak'``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.server import ROOT

pytestmark = [pytest.mark.soak, pytest.mark.timeout(240)]
SOAK_SECONDS = 45


@pytest.fixture(scope="module")
def summary() -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.soak", "--seconds", str(SOAK_SECONDS), "--seed", "11"],
                          cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_completed_response_is_correct(summary: dict) -> None:
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["completed_responses"] > 1000, summary
    assert all(summary["verified"].get(kind, 0) > 0 for kind in ("blob", "upload", "stream")), summary["verified"]


def test_disconnect_counters_equal_the_aborts_injected(summary: dict) -> None:
    injected = summary["aborts_injected"]
    assert all(count > 0 for count in injected.values()), injected
    assert summary["disconnects_counted"] == injected
    assert summary["disconnects_total"] == sum(injected.values())  # (no websocket, no other source)
    assert summary["abandoned_requests"] == sum(injected.values())
    assert summary["cancelled_requests"] == 0  # --on-disconnect notify


def test_tasks_and_descriptors_return_to_baseline(summary: dict) -> None:
    assert summary["tasks"]["end"] == summary["tasks"]["baseline"], summary["tasks"]
    assert summary["fds"]["end"] == summary["fds"]["baseline"], summary["fds"]


def test_memory_is_flat_after_warm_up(summary: dict) -> None:
    assert summary["rss_kb"]["growth_after_warmup_pct"] <= 5.0, summary["rss_kb"]


def test_slowloris_clients_are_cut_and_the_server_stays_clean(summary: dict) -> None:
    assert summary["slowloris_408"] > 0
    assert summary["server_alive_at_end"] and summary["server_exit"] == 0
    assert summary["server_log_errors"] == 0, summary["server_log_sample"]
    assert summary["ok"], summary["checks"]
