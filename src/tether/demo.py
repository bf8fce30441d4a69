"""The built-in demo app, served by ``tether`` with no APP: the server working, and
disconnects being caught live (the page starts slow requests and abandons them)."""

from __future__ import annotations

import asyncio
import json
import time

from .logs import STATS

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Tether</title>
<style>body{font:16px system-ui;margin:2em auto;max-width:44em}code{background:#eee;padding:0 .2em}
#log{font:13px monospace;white-space:pre;background:#f6f6f6;padding:1em;min-height:6em}</style></head>
<body><h1>Tether is running</h1>
<p>This is the demo app. Serve your own with <code>tether module:app</code>.</p>
<p>Click below: the page starts a request that the server keeps open, then abandons it after
300 ms. The server sees the client leave at once and the app is told; the numbers come from
<code>tether.stats()</code>.</p>
<button id="go">Start and abandon a request</button>
<div id="log"></div>
<script>
const log = (m) => document.getElementById('log').textContent += m + "\\n";
document.getElementById('go').onclick = async () => {
  const ctl = new AbortController();
  const t0 = performance.now();
  fetch('/wait', {signal: ctl.signal}).catch(() => {});
  setTimeout(() => ctl.abort(), 300);
  await new Promise(r => setTimeout(r, 450));
  const r = await fetch('/last'); const d = await r.json();
  log(`abandoned after ${(d.left_after*1000|0)} ms; app told ${d.told_ms.toFixed(2)} ms after the close; totals ${JSON.stringify(d.stats.disconnects)}`);
};
</script></body></html>"""

_last: dict = {"left_after": 0.0, "told_ms": 0.0}


async def app(scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/wait":
        started = time.monotonic()
        signal = scope["extensions"]["tether.disconnect"]
        await receive()  # the (empty) body
        try:
            await asyncio.wait_for(signal.wait(), 30)
        except asyncio.TimeoutError:
            pass
        told = time.monotonic()
        _last["left_after"] = told - started
        _last["told_ms"] = 0.0
        message = await receive()  # returns http.disconnect at once now
        _last["told_ms"] = (time.monotonic() - told) * 1000
        if message["type"] != "http.disconnect":
            await _respond(send, 200, b"text/plain", b"still here\n")
        return
    if path == "/last":
        body = json.dumps({**_last, "stats": STATS.snapshot()}).encode()
        await _respond(send, 200, b"application/json", body)
        return
    if path == "/":
        await _respond(send, 200, b"text/html; charset=utf-8", PAGE)
        return
    await _respond(send, 404, b"text/plain", b"Not Found\n")


async def _respond(send, status: int, content_type: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})
