"""The built-in demo app, served by ``tether`` with no APP: the server working, and
disconnects being caught live (the page starts slow requests and abandons them).

``GET /wait?id=N`` holds a request open until its client leaves and records how long the app
took to hear of it; ``GET /result?id=N`` returns that record as JSON (waiting for it briefly).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from urllib.parse import parse_qs

from .logs import STATS

ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
        b'<rect width="16" height="16" rx="3" fill="#1f5f8b"/>'
        b'<path d="M4 4h8v2H9v6H7V6H4z" fill="#fff"/></svg>')

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tether</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/svg+xml" href="/favicon.ico">
<style>
body{font:16px/1.45 system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:46em}
code{background:#eee;padding:0 .2em;overflow-wrap:anywhere}
dl{margin-top:1.2em;font-size:15px}dt{font-weight:600}dd{margin:0 0 .5em 1.2em}
#box{background:#f6f6f6;padding:.6em;margin-top:1em;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:14px}
th,td{padding:.25em .4em;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
th{font-weight:600}th:first-child,td:first-child{width:2.5em}
td{font-variant-numeric:tabular-nums}
#notes p{margin:.4em 0;font-size:14px}
</style></head>
<body><h1>Tether is running</h1>
<p>This is the demo app. Serve your own with <code>tether module:app</code>.</p>
<p>Click below: the page starts a request that the server holds open, then abandons it
(<code>AbortController.abort()</code>) after 300 ms. The server sees the client leave at once
and the app, waiting on <code>scope["extensions"]["tether.disconnect"]</code>, is told.</p>
<button id="go">Start and abandon a request</button>
<div id="box"><table><thead><tr><th>#</th><th>held open</th><th>server: left &rarr; told</th>
<th>page: abort &rarr; told</th></tr></thead><tbody id="rows"></tbody></table>
<div id="notes"><p id="clock"></p><p id="stats"></p></div></div>
<dl>
<dt>server: left &rarr; told</dt><dd>from the moment Tether saw the client leave
(<code>signal.left_at</code>: its FIN or RST; a FIN before the response has started is first
confirmed by a probe, one round trip) to the moment the app's <code>await signal.wait()</code>
returned; both read on the server's <code>time.monotonic()</code>.</dd>
<dt>page: abort &rarr; told</dt><dd>from the page's <code>abort()</code> to the app being told,
the browser's own work to close the connection included: the page's clock
(<code>performance.timeOrigin + performance.now()</code>) against the server's
<code>time.time()</code>, which means something only where both clocks agree (browser and server
on one machine); the clock check says how far apart they look.</dd>
</dl>
<script>
const $ = (id) => document.getElementById(id);
const wall = () => performance.timeOrigin + performance.now();
const ms = (x, digits) => x.toFixed(digits) + ' ms';
const get = async (path) => { const asked = wall(); const d = await (await fetch(path)).json(); return [d, asked, wall()]; };
let n = 0;
$('go').onclick = async () => {
  $('go').disabled = true;
  try { await run(); } finally { $('go').disabled = false; }
};
const run = async () => {
  const id = ++n + '-' + Math.random().toString(36).slice(2);
  const ctl = new AbortController();
  fetch('/wait?id=' + id, {signal: ctl.signal}).catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
  ctl.abort();
  const abortedAt = wall();
  const [d] = await get('/result?id=' + id);  // answered once the app has been told
  const row = $('rows').insertRow();
  if (!d.told) {
    row.insertCell().textContent = n;
    const cell = row.insertCell(); cell.colSpan = 3; cell.textContent = 'not told within 5 s';
    return;
  }
  for (const text of [n, ms(d.held * 1000, 0), ms(d.told_after * 1000, 3), ms(d.told_wall * 1000 - abortedAt, 1)])
    row.insertCell().textContent = text;
  // Clock check: the server's clock in an immediate answer against the middle of its round
  // trip; of three tries, the shortest round trip says the most.
  let c, asked, answered;
  for (let i = 0; i < 3; i++) {
    const [d2, a, b] = await get('/result?id=' + id);
    if (!c || b - a < answered - asked) [c, asked, answered] = [d2, a, b];
  }
  const offset = c.now * 1000 - (asked + answered) / 2;
  $('clock').textContent = 'Clock check: the server\\'s clock is ' + ms(Math.abs(offset), 1) +
    (offset < 0 ? ' behind' : ' ahead of') + ' the page\\'s (\\u00b1' + ms((answered - asked) / 2, 1) +
    ', half the shortest of three round trips).';
  const s = c.stats, dis = s.disconnects;
  $('stats').textContent = 'tether.stats() of this worker: ' + s.requests + ' requests answered; disconnects: ' +
    dis.before_response + ' before the response, ' + dis.mid_body + ' mid-body, ' + dis.mid_stream +
    ' mid-stream; ' + s.abandoned_requests + ' abandoned, the apps ran on ' +
    ms(s.abandoned_seconds * 1000, 1) + ' in all after their clients left.';
};
</script></body></html>"""

# The last requests' records, by the page's id (bounded: the demo keeps no history).
_results: OrderedDict[str, asyncio.Future] = OrderedDict()
_KEEP = 64


def _record(request_id: str) -> asyncio.Future:
    future = _results.get(request_id)
    if future is None:
        future = _results[request_id] = asyncio.get_running_loop().create_future()
        while len(_results) > _KEEP:
            _results.popitem(last=False)
    return future


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
    request_id = parse_qs(scope["query_string"].decode("latin-1")).get("id", [""])[0][:64]
    if path == "/wait":
        await _wait(scope, receive, send, request_id)
    elif path == "/result":
        record, signal = _record(request_id), scope["extensions"]["tether.disconnect"]
        if not record.done():  # wait for it (5 s at most), or for this client to leave too
            gone = asyncio.ensure_future(signal.wait())
            await asyncio.wait({record, gone}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
        if signal.is_set():
            return
        result = record.result() if record.done() else {"told": False}
        body = json.dumps({**result, "now": time.time(), "stats": STATS.snapshot()}).encode()
        await _respond(send, 200, b"application/json", body)
    elif path == "/":
        await _respond(send, 200, b"text/html; charset=utf-8", PAGE)
    elif path == "/favicon.ico":
        await _respond(send, 200, b"image/svg+xml", ICON)
    else:
        await _respond(send, 404, b"text/plain", b"Not Found\n")


async def _wait(scope: dict, receive, send, request_id: str) -> None:
    """Hold the request open until the client leaves (30 s at most); record when we heard."""
    started = time.monotonic()
    signal = scope["extensions"]["tether.disconnect"]
    await receive()  # the (empty) body
    try:
        await asyncio.wait_for(signal.wait(), 30)
    except asyncio.TimeoutError:
        await _respond(send, 200, b"text/plain", b"still here\n")
        return
    told, told_wall = time.monotonic(), time.time()
    future = _record(request_id)
    if not future.done():
        future.set_result({"told": True, "held": signal.left_at - started,
                           "told_after": told - signal.left_at, "told_wall": told_wall})


async def _respond(send, status: int, content_type: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})
