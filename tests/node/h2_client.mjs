// A real HTTP/2 client for the tests: Node's built-in node:http2, no packages.
//
//   node h2_client.mjs URL MODE [COUNT] [WINDOW]
//
// MODE "close": send COUNT requests on one session, then close the session gracefully at once
//               (session.close(): GOAWAY NO_ERROR, then Node waits for its open streams).
// MODE "wait":  send COUNT requests and print "sent" on stderr once their streams are open,
//               then wait for the answers (the test may shut the server down meanwhile).
// WINDOW: the client's stream and connection flow-control windows (default: Node's 65535), e.g.
//         2147483647 for a client that never holds the server back (as curl and browsers do).
// Prints one JSON line: {"results": [{"status", "bytes", "error"}...], "goaway": code|null}.
import http2 from 'node:http2';

const [url, mode = 'close', countArg = '1', windowArg] = process.argv.slice(2);
const count = Number(countArg);
const window = windowArg ? Number(windowArg) : null;
const session = http2.connect(url, window ? { settings: { initialWindowSize: window } } : {});
if (window) session.on('connect', () => session.setLocalWindowSize(window));
let goaway = null;
session.on('goaway', (code) => { goaway = code; });
session.on('error', () => {});
const timer = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', goaway })); process.exit(2); }, 20000);

const ready = [];
const one = (path) => new Promise((resolve) => {
  const req = session.request({ ':path': path });
  ready.push(new Promise((r) => req.once('ready', r)));
  let status = null, bytes = 0;
  req.on('response', (headers) => { status = headers[':status']; });
  req.on('data', (chunk) => { bytes += chunk.length; });
  req.on('end', () => resolve({ status, bytes, error: null }));
  req.on('error', (err) => resolve({ status, bytes, error: String(err.code || err.message) }));
  req.end();
});

const pending = [];
for (let i = 0; i < count; i++) pending.push(one(new URL(url).pathname + (count > 1 ? `?n=${i}` : '')));
await Promise.all(ready);  // every stream is open (its HEADERS written)
if (mode === 'close') session.close();
else process.stderr.write('sent\n');
const results = await Promise.all(pending);
clearTimeout(timer);
if (mode !== 'close') session.close();
console.log(JSON.stringify({ results, goaway }));
