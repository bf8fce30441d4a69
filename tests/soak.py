"""Chaos soak: steady keep-alive load with injected client aborts, then a leak audit.

    python -m tests.soak --seconds N [--clients C] [--port P] [--seed S]

Starts ``python -m tether tests.soak:app`` (one worker) and runs, for N seconds:

* keep-alive clients at steady load: checksummed downloads (/blob: the body is a sha256 chain
  derived from the path, recomputed by the client), uploads (/upload answers the checksum of
  what it read) and streamed responses (/stream: many chunks with sleeps), each verified;
* in 1% of requests each, an abort: a reset (SO_LINGER 0 + close) while the app holds a
  complete request (``before_response``), an upload cut short by close or reset
  (``mid_body``), a streamed response abandoned after a few chunks (``mid_stream``). The client
  first makes sure the app is running (/started/ID, or the stream's first chunk), so each
  abort is exactly one disconnect in tether's counters;
* a few slowloris clients trickling header bytes until the server's header timeout (408).

Then it stops the load, lets the server settle and compares /stats (tether.stats(), asyncio
tasks, open fds, RSS) with the baseline taken before the load (tasks, fds) and after the
warm-up (RSS). The summary is one JSON object on stdout; the exit code is 0 if every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

from tests.fuzz import start_server, stop_server
from tests.support.asgi import receive_body
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_OPTIONS = ["--timeout-keep-alive", "2", "--timeout-request-header", "3", "--no-access-log",
                  "--log-level", "warning", "--workers", "1"]
BLOB_SIZES = [0, 1, 100, 4096, 65536, 300_000]
STREAM_CHUNK = 1024
REQUEST_TIMEOUT = 20.0  # any single exchange; far above the app's own delays
RSS_TOLERANCE = 0.05


# ---------------------------------------------------------------------- content both sides derive
def derived(name: str, size: int) -> bytes:
    """size bytes derived from name (SHAKE-256, the sha256 chain idea in one C call): checkable by
    anyone who knows the name, and nothing cached on either side, so memory stays flat."""
    return hashlib.shake_256(name.encode()).digest(size)


def stream_chunk(name: str, index: int) -> bytes:
    return derived(f"{name}:{index}", STREAM_CHUNK)


def checksum(body: bytes) -> bytes:
    return b"%d:%s" % (len(body), hashlib.sha256(body).hexdigest().encode())


# ---------------------------------------------------------------------- the app under test
STARTED: set = set()  # request ids whose app is running (for the client to sync its abort on)


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def server_stats() -> dict:
    import tether
    return {
        "tether": tether.stats(),
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")) - 1,  # (minus the one listdir used)
        "rss_kb": _proc_status("VmRSS"),
        "started_pending": len(STARTED),
    }


async def _answer(send, body: bytes, status: int = 200, content_type: bytes = b"application/octet-stream") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # (lifespan: unsupported, which tether's --lifespan auto accepts)
    parts = scope["path"].strip("/").split("/")
    route = parts[0]
    if route == "blob":  # /blob/NAME/SIZE
        await _answer(send, derived(parts[1], int(parts[2])))
    elif route == "upload":  # /upload/ID: checksum of the body
        STARTED.add(parts[1])
        try:
            body = await receive_body(receive)
        finally:
            STARTED.discard(parts[1])
        if body is not None:
            await _answer(send, checksum(body), content_type=b"text/plain")
    elif route == "hold":  # /hold/ID: answers after a while, unless the client leaves first
        STARTED.add(parts[1])
        try:
            gone = scope["extensions"]["tether.disconnect"]
            try:
                await asyncio.wait_for(gone.wait(), 10)
            except asyncio.TimeoutError:
                await _answer(send, b"held", content_type=b"text/plain")
        finally:
            STARTED.discard(parts[1])
    elif route == "stream":  # /stream/NAME/CHUNKS: chunked, with sleeps
        await _stream(send, parts[1], int(parts[2]))
    elif route == "started":  # /started/ID: is that request's app running now?
        await _answer(send, b"1" if parts[1] in STARTED else b"0", content_type=b"text/plain")
    elif route == "stats":
        await _answer(send, json.dumps(server_stats()).encode(), content_type=b"application/json")
    else:
        await _answer(send, b"not found", 404, b"text/plain")


async def _stream(send, name: str, chunks: int) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
    for index in range(chunks):
        await send({"type": "http.response.body", "body": stream_chunk(name, index), "more_body": True})
        if index % 4 == 3:
            await asyncio.sleep(0.005)
    await send({"type": "http.response.body", "body": b""})


# ---------------------------------------------------------------------- a minimal HTTP/1.1 client
class Mismatch(Exception):
    """A completed response with the wrong content: a server bug."""


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict]:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status >= 200:
            return status, headers


async def read_chunk(reader: asyncio.StreamReader, headers: dict) -> bytes | None:
    """One chunk of a chunked body (None at the end), or the whole body if Content-Length."""
    if b"content-length" in headers:
        return await reader.readexactly(int(headers[b"content-length"]))
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    if size == 0:
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
        return None
    data = await reader.readexactly(size)
    await reader.readexactly(2)
    return data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    status, headers = await read_head(reader)
    if b"content-length" in headers:
        return status, headers, await read_chunk(reader, headers)
    parts = []
    while (chunk := await read_chunk(reader, headers)) is not None:
        parts.append(chunk)
    return status, headers, b"".join(parts)


def request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if method in ("POST", "PUT") else ""
    return f"{method} {path} HTTP/1.1\r\nHost: soak\r\n{length}{extra}\r\n".encode() + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)

    async def exchange(self, data: bytes) -> tuple[int, dict, bytes]:
        await self.open()
        self.writer.write(data)
        return await asyncio.wait_for(read_response(self.reader), REQUEST_TIMEOUT)

    def drop(self, how: str = "close") -> None:
        if self.writer is not None:
            if how == "reset":
                reset(self.writer)
            else:
                self.writer.close()
        self.reader = self.writer = None


# ---------------------------------------------------------------------- the soak
class Soak:
    def __init__(self, port: int, seed: int, seconds: float, clients: int, slowloris: int) -> None:
        self.port = port
        self.seed = seed
        self.seconds = seconds
        self.clients = clients
        self.slowloris = slowloris
        self.stop = False
        self.ok = collections.Counter()  # verified responses by kind
        self.injected = collections.Counter()  # aborts by expected phase
        self.errors: list[str] = []
        self.error_count = 0
        self.slowloris_408 = 0
        self.next_id = 0

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text)

    def new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    async def stats(self) -> dict:
        conn = Connection(self.port)
        try:
            status, _, body = await conn.exchange(request("GET", "/stats", extra="Connection: close\r\n"))
        finally:
            conn.drop()
        assert status == 200
        return json.loads(body)

    async def wait_started(self, request_id: str) -> bool:
        """Poll until the app of request_id runs (bounded): the abort then lands on a live request.
        (A connection of its own each time, so that none idles into the keep-alive timeout.)"""
        control = Connection(self.port)
        try:
            for _ in range(1000):
                _, _, body = await control.exchange(request("GET", f"/started/{request_id}"))
                if body == b"1":
                    return True
                await asyncio.sleep(0.005)
            return False
        finally:
            control.drop()

    # -- the normal requests, each verified
    async def blob(self, conn: Connection, rng: random.Random) -> None:
        name, size = f"b{rng.randrange(50)}", rng.choice(BLOB_SIZES)
        status, _, body = await conn.exchange(request("GET", f"/blob/{name}/{size}"))
        if status != 200 or body != derived(name, size):
            raise Mismatch(f"/blob/{name}/{size}: status {status}, {len(body)} bytes, content differs")
        self.ok["blob"] += 1

    async def upload(self, conn: Connection, rng: random.Random) -> None:
        body = derived(f"u{rng.randrange(50)}", rng.choice(BLOB_SIZES))
        status, _, answer = await conn.exchange(request("POST", f"/upload/{self.new_id('u')}", body))
        if status != 200 or answer != checksum(body):
            raise Mismatch(f"/upload of {len(body)} bytes: status {status}, answer {answer[:80]!r}")
        self.ok["upload"] += 1

    async def stream(self, conn: Connection, rng: random.Random) -> None:
        name, chunks = f"s{rng.randrange(50)}", rng.randint(1, 64)
        status, _, body = await conn.exchange(request("GET", f"/stream/{name}/{chunks}"))
        if status != 200 or body != b"".join(stream_chunk(name, index) for index in range(chunks)):
            raise Mismatch(f"/stream/{name}/{chunks}: status {status}, {len(body)} bytes, content differs")
        self.ok["stream"] += 1

    # -- the aborts, each one disconnect in a known phase
    async def reset_mid_request(self, conn: Connection) -> None:
        request_id = self.new_id("h")
        await conn.open()
        conn.writer.write(request("GET", f"/hold/{request_id}"))
        if await self.wait_started(request_id):
            conn.drop("reset")
            self.injected["before_response"] += 1
        else:
            self.error(f"/hold/{request_id} never started")
            conn.drop("reset")

    async def abort_upload(self, conn: Connection, rng: random.Random) -> None:
        request_id = self.new_id("a")
        await conn.open()
        size = 200_000
        conn.writer.write(f"POST /upload/{request_id} HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n\r\n".encode()
                          + derived("abort", rng.randint(0, 50_000)))
        if await self.wait_started(request_id):
            conn.drop(rng.choice(["close", "reset"]))
            self.injected["mid_body"] += 1
        else:
            self.error(f"/upload/{request_id} never started")
            conn.drop("reset")

    async def abandon_stream(self, conn: Connection, rng: random.Random) -> None:
        await conn.open()
        conn.writer.write(request("GET", f"/stream/abandon/{100_000}"))  # far longer than anyone waits
        _, headers = await asyncio.wait_for(read_head(conn.reader), REQUEST_TIMEOUT)
        for _ in range(rng.randint(1, 5)):
            await asyncio.wait_for(read_chunk(conn.reader, headers), REQUEST_TIMEOUT)
        conn.drop(rng.choice(["close", "reset"]))
        self.injected["mid_stream"] += 1

    async def load_client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn = Connection(self.port)
        try:
            while not self.stop:
                roll = rng.random()
                try:
                    if roll < 0.01:
                        await self.reset_mid_request(conn)
                    elif roll < 0.02:
                        await self.abort_upload(conn, rng)
                    elif roll < 0.03:
                        await self.abandon_stream(conn, rng)
                    elif roll < 0.55:
                        await self.blob(conn, rng)
                    elif roll < 0.80:
                        await self.upload(conn, rng)
                    else:
                        await self.stream(conn, rng)
                    if rng.random() < 0.02:
                        conn.drop()  # a new connection now and then
                except Mismatch as exc:
                    self.error(f"wrong content: {exc}")
                    conn.drop()
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                    self.error(f"client {index}: {exc!r}")
                    conn.drop()
        finally:
            conn.drop()

    async def slowloris_client(self, index: int) -> None:
        """Trickles a request head, a byte every 0.2 s, until the server gives up (408 + close)."""
        head = b"GET /blob/b1/100 HTTP/1.1\r\nHost: soak\r\n" + b"X-Slow: " + b"z" * 1000
        while not self.stop:
            conn = Connection(self.port)
            try:
                await conn.open()
                received = b""
                for byte in head:
                    if self.stop:
                        break
                    conn.writer.write(bytes([byte]))
                    await asyncio.sleep(0.2)
                    if conn.reader.at_eof() or len(conn.reader._buffer):  # noqa: SLF001 (peek without blocking)
                        received = await asyncio.wait_for(conn.reader.read(), REQUEST_TIMEOUT)
                        break
                if received.startswith(b"HTTP/1.1 408"):
                    self.slowloris_408 += 1
                elif received:
                    self.error(f"slowloris got {received[:80]!r}")
            except (OSError, asyncio.TimeoutError) as exc:
                self.error(f"slowloris {index}: {exc!r}")
            finally:
                conn.drop()

    async def run(self) -> dict:
        baseline = await self.stats()
        warmup = min(max(5.0, self.seconds * 0.2), self.seconds)
        started = time.monotonic()
        tasks = [asyncio.ensure_future(self.load_client(i)) for i in range(self.clients)]
        tasks += [asyncio.ensure_future(self.slowloris_client(i)) for i in range(self.slowloris)]
        await asyncio.sleep(warmup)
        after_warmup = await self.stats()
        await asyncio.sleep(max(0.0, self.seconds - warmup))
        self.stop = True
        await asyncio.wait(tasks, timeout=60)
        load_seconds = time.monotonic() - started
        final = await self.settle(baseline)
        return self.summary(baseline, after_warmup, final, load_seconds)

    async def settle(self, baseline: dict) -> dict:
        """Wait (bounded) until the server is back to its baseline of tasks and fds."""
        deadline = time.monotonic() + 20
        while True:
            final = await self.stats()
            if (final["tasks"] <= baseline["tasks"] and final["fds"] <= baseline["fds"]) or time.monotonic() > deadline:
                return final
            await asyncio.sleep(0.25)

    def summary(self, baseline: dict, after_warmup: dict, final: dict, load_seconds: float) -> dict:
        disconnects = {phase: final["tether"]["disconnects"][phase] - baseline["tether"]["disconnects"][phase]
                       for phase in ("mid_body", "before_response", "mid_stream")}
        injected = {phase: self.injected[phase] for phase in disconnects}
        abandoned = final["tether"]["abandoned_requests"] - baseline["tether"]["abandoned_requests"]
        rss_growth = (final["rss_kb"] - after_warmup["rss_kb"]) / after_warmup["rss_kb"]
        completed = sum(self.ok.values())
        checks = {
            "every completed response correct": self.error_count == 0,
            "tasks back to baseline": final["tasks"] <= baseline["tasks"],
            "fds back to baseline": final["fds"] <= baseline["fds"],
            "rss within 5% of after warm-up": rss_growth <= RSS_TOLERANCE,
            "disconnect counters equal the aborts injected": disconnects == injected,
            "every abort counted as abandoned work": abandoned == sum(injected.values()),
            "each kind of abort injected": all(injected.values()),
            "slowloris clients cut by the header timeout": self.slowloris == 0 or self.slowloris_408 > 0,
            "load ran": completed > 0,
        }
        return {
            "ok": all(checks.values()),
            "checks": checks,
            "seed": self.seed,
            "seconds": round(load_seconds, 1),
            "clients": self.clients,
            "completed_responses": completed,
            "responses_per_second": round(completed / load_seconds, 1),
            "verified": dict(self.ok),
            "errors": self.error_count,
            "error_samples": self.errors,
            "aborts_injected": injected,
            "disconnects_counted": disconnects,
            "disconnects_total": final["tether"]["disconnects_total"] - baseline["tether"]["disconnects_total"],
            "abandoned_requests": abandoned,
            "abandoned_seconds": round(final["tether"]["abandoned_seconds"] - baseline["tether"]["abandoned_seconds"], 3),
            "cancelled_requests": final["tether"]["cancelled_requests"],
            "server_requests": final["tether"]["requests"],
            "slowloris_408": self.slowloris_408,
            "tasks": {"baseline": baseline["tasks"], "after_warmup": after_warmup["tasks"], "end": final["tasks"]},
            "fds": {"baseline": baseline["fds"], "after_warmup": after_warmup["fds"], "end": final["fds"]},
            "rss_kb": {"baseline": baseline["rss_kb"], "after_warmup": after_warmup["rss_kb"], "end": final["rss_kb"],
                       "growth_after_warmup_pct": round(100 * rss_growth, 2)},
        }


# ---------------------------------------------------------------------- server process
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=8, help="keep-alive load clients")
    parser.add_argument("--slowloris", type=int, default=3, help="slowloris clients")
    parser.add_argument("--port", type=int, default=0, help="port for the server (default: a free one)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--log", type=Path, default=None, help="server log file (default: /tmp/tether-soak-SEED.log)")
    args = parser.parse_args(argv)
    port = args.port or free_port()
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    log_path = args.log or Path(f"/tmp/tether-soak-{seed}.log")
    proc = start_server(port, log_path, app="tests.soak:app", options=SERVER_OPTIONS)
    try:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        summary = runner(Soak(port, seed, args.seconds, args.clients, args.slowloris).run())
        summary["server_alive_at_end"] = proc.poll() is None
    finally:
        summary_exit = stop_server(proc)
    log_text = log_path.read_text()
    problems = [line for line in log_text.splitlines() if "Traceback" in line or " ERROR " in line]
    summary["server_exit"] = summary_exit
    summary["server_log"] = str(log_path)
    summary["server_log_errors"] = len(problems)
    summary["server_log_sample"] = problems[:5]
    summary["checks"]["server alive, no error logged"] = summary["server_alive_at_end"] and not problems
    summary["ok"] = all(summary["checks"].values())
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
