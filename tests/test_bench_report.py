"""The benchmark harness's own logic (no timing here): percentiles and result files."""

import json
import os
import platform
import sys
from pathlib import Path

from bench.disconnect import _wrk_rate
from bench.report import percentile, write_results

ROOT = Path(__file__).resolve().parent.parent


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_write_results_name_the_interpreter(tmp_path):
    path = write_results("demo", {"rows": [1]}, "| a |", "python bench/x.py --quick", directory=tmp_path)
    tag = "py%d.%d" % sys.version_info[:2]
    assert path.name.startswith(f"demo-{tag}-")
    data = json.loads(path.read_text())
    assert data["name"] == "demo" and data["rows"] == [1]
    assert data["interpreter"] == f"{platform.python_implementation()} {platform.python_version()}"
    latest = (tmp_path / f"demo-{tag}-latest.md").read_text()
    assert "python bench/x.py --quick" in latest and "| a |" in latest
    assert f"every server on {data['interpreter']}" in latest


def test_command_line_names_the_interpreter_that_ran():
    from bench.report import command_line

    line = command_line("ws.py", ["--quick"])
    assert line.endswith(" bench/ws.py --quick")
    assert line.split()[0] in (sys.executable, os.path.relpath(sys.executable, ROOT))


def test_wrk_rate_parsing():
    out = "Running 10s test @ http://x\n  1 threads\nRequests/sec:  30109.15\nTransfer/sec: 4MB\n"
    assert _wrk_rate(out) == 30109.15
    assert _wrk_rate("garbage") is None


WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:1/hello
  1 threads and 64 connections
  Latency Distribution
     50%    1.20ms
     75%    1.50ms
     90%    2.00ms
     99%  850.00us
  100000 requests in 3.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  33333.33
"""


def test_parse_wrk_reads_rate_percentiles_and_errors():
    from bench.throughput import parse_wrk

    result = parse_wrk(WRK_OUTPUT)
    assert result["rps"] == 33333.33
    assert result["p50_ms"] == 1.2
    assert result["p99_ms"] == 0.85
    assert result["errors"] == 3 + 4
    assert result["requests"] == 100000


def test_parse_h2load_reads_rate_and_failures():
    from bench.h2 import parse_h2load

    out = ("finished in 3.00s, 5090.00 req/s, 181.80KB/s\n"
           "requests: 25450 total, 26090 started, 25450 done, 25400 succeeded, 50 failed, 50 errored, 0 timeout\n")
    result = parse_h2load(out)
    assert result["rps"] == 5090.0
    assert result["errors"] == 50


def test_summarise_gives_medians_spread_and_ratios_in_the_same_run():
    from bench.throughput import markdown, summarise

    def run(rps):
        return {"rps": rps, "p99_ms": 2.0, "errors": 0}

    rows = summarise({"hello": {"tether": [run(30), run(10), run(20)], "uvicorn": [run(10), run(10), run(10)]}})
    tether = next(r for r in rows if r["server"] == "tether")
    uvicorn = next(r for r in rows if r["server"] == "uvicorn")
    assert tether["median_rps"] == 20 and tether["spread_pct"] == 100.0
    assert uvicorn["tether_ratio"] == 2.0
    table = markdown(rows)
    assert "| hello | uvicorn | 10 | ±0% | 2.00 | 0 | 2.00× |" in table
    assert "| hello | tether | 20 | ±50% | 2.00 | 0 | — |" in table


def test_bench_run_selects_suites_and_scenarios():
    from bench.run import command, plan

    assert [suite for suite, _ in plan([])] == ["throughput", "h2", "ws", "disconnect", "scale", "slowloris"]
    assert plan(["stream", "hello", "h2-64k", "ws-echo"]) == [("throughput", ["stream", "hello"]), ("h2", ["64k"]),
                                                             ("ws", None)]
    assert plan(["throughput", "hello"]) == [("throughput", None)]
    assert plan(["disconnect-load"]) == [("disconnect", ["load"])]
    args = command("throughput", ["hello"], quick=True)
    assert args[-3:] == ["--quick", "--scenarios", "hello"] and args[1].endswith("throughput.py")
    assert args[0] == str(ROOT / "bench" / ".venv-3.11" / "bin" / "python")
    import pytest

    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        plan(["nope"])


def test_bench_run_python_picks_the_venv_every_server_runs_from():
    import pytest

    from bench.run import command, parse_args

    assert parse_args([]) == (False, "3.11", [])
    assert parse_args(["--python", "3.13", "--quick", "hello"]) == (True, "3.13", ["hello"])
    assert parse_args(["hello", "--python=3.12"]) == (False, "3.12", ["hello"])
    assert command("ws", None, quick=False, version="3.13")[0] == str(ROOT / "bench" / ".venv-3.13" / "bin" / "python")
    for bad in (["--python"], ["--python", "313"], ["--python", "python3.13"]):
        with pytest.raises(ValueError, match="--python wants a version such as 3.13"):
            parse_args(bad)


def test_gunicorn_runs_its_asgi_worker_alone():
    from bench.servers import command

    args = command("gunicorn", "bench.apps.throughput_app:app", 8123)
    assert args[1:3] == ["-k", "asgi"] and args[args.index("--workers") + 1] == "1"
    assert args[args.index("--bind") + 1] == "127.0.0.1:8123" and args[-1] == "bench.apps.throughput_app:app"


def test_ws_echo_client_output_and_table():
    from bench.ws import markdown, parse_client, summarise

    assert parse_client('noise\n{"messages": 300, "seconds": 3.0, "rate": 100.0, "errors": 0, "open": 64, '
                        '"lost_early": 0}\n') == {"rate": 100.0, "errors": 0}
    assert parse_client("Traceback ...") == {"rate": None, "errors": 1}
    rows = summarise({"tether": [{"rate": 300.0, "errors": 0}] * 3, "uvicorn": [{"rate": 100.0, "errors": 0},
                                                                                 {"rate": 200.0, "errors": 1},
                                                                                 {"rate": None, "errors": 1}]})
    uvicorn = next(r for r in rows if r["server"] == "uvicorn")
    assert uvicorn["median"] == 150.0 and uvicorn["tether_ratio"] == 2.0 and uvicorn["errors"] == 2
    assert "| uvicorn | 150 | ±33% | 2 | 2.00× |" in markdown(rows)


def test_ws_client_splits_server_frames():
    from bench.ws_load import masked_frame, split_frames

    buf = bytearray(b"\x81\x03abc" + b"\x82\x7e\x00\x80" + b"x" * 128 + b"\x89\x00" + b"\x81\x05ab")
    frames, used = split_frames(buf)
    assert frames == [(1, b"abc"), (2, b"x" * 128), (9, b"")]
    assert used == 5 + 4 + 128 + 2  # the last frame is incomplete
    frame = masked_frame(1, b"hi")
    assert frame[:2] == b"\x81\x82" and bytes(b ^ frame[2 + i % 4] for i, b in enumerate(frame[6:])) == b"hi"


def test_cpu_seconds_of_this_process_grows_with_work():
    import os
    import time

    from bench.throughput import cpu_seconds

    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert 0.1 <= cpu_seconds(os.getpid()) - before < 5
