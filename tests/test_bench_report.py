"""The benchmark harness's own logic (no timing here): percentiles and result files."""

import json

from bench.disconnect import _wrk_rate
from bench.report import percentile, write_results


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_write_results(tmp_path):
    path = write_results("demo", {"rows": [1]}, "| a |", "python bench/x.py --quick", directory=tmp_path)
    data = json.loads(path.read_text())
    assert data["name"] == "demo" and data["rows"] == [1]
    latest = (tmp_path / "demo-latest.md").read_text()
    assert "python bench/x.py --quick" in latest and "| a |" in latest


def test_wrk_rate_parsing():
    out = "Running 10s test @ http://x\n  1 threads\nRequests/sec:  30109.15\nTransfer/sec: 4MB\n"
    assert _wrk_rate(out) == 30109.15
    assert _wrk_rate("garbage") is None
