"""What recording one request costs, three ways (tether/metrics/__init__.py explains the choice).

    python bench/metrics_record.py

A request's recording is one counter increment (requests by protocol and status class) and one
histogram observation (its duration). Measured, each in a fresh interpreter:

* prometheus_client multiprocess mode (PROMETHEUS_MULTIPROC_DIR: every increment goes to a
  per-process mmap'd file, under a lock);
* prometheus_client's ordinary in-process metrics (a lock per value);
* Tether's recorder (``Recorder.request_done``: two additions to plain lists, which the worker
  publishes to its shared block once a second).

Labelled children are looked up once, outside the timed loop, as a careful exporter would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 200_000

SETUP = {
    "prometheus_client multiprocess": """
import os, tempfile
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
""",
    "prometheus_client in-process": "",
}
PROMETHEUS = """
from prometheus_client import CollectorRegistry, Counter, Histogram
from tether.metrics.recorder import BUCKETS
registry = CollectorRegistry()
requests = Counter("tether_requests", "", ["protocol", "status_class"], registry=registry).labels("http1", "2xx")
duration = Histogram("tether_request_duration_seconds", "", ["protocol"], buckets=BUCKETS, registry=registry).labels("http1")
def record():
    requests.inc()
    duration.observe(0.00012)
"""
TETHER = """
from tether.metrics.recorder import Recorder, new_slot
recorder = Recorder()
recorder.attach(new_slot(), supervised=True)
def record():
    recorder.request_done("1.1", 200, 0.00012)
"""
TIMING = f"""
import timeit
best = min(timeit.repeat(record, number={N}, repeat=5))
print(best / {N} * 1e6)
"""


def measure(code: str) -> float:
    env = {"PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, check=True)
    return float(out.stdout.strip())


def main() -> int:
    rows = [(name, measure(setup + PROMETHEUS + TIMING)) for name, setup in SETUP.items()]
    rows.append(("Tether recorder", measure(TETHER + TIMING)))
    print("| recording of one request | us |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
