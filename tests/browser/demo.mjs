// Drives the demo page (`tether` with no APP) in Debian's headless Chromium, as a person would:
// opens it at each width, clicks the button, waits for the result row, and reports as JSON on
// stdout what the page showed, what overflowed, and every HTTP error. tests/test_demo.py judges.
//   node demo.mjs URL SCREENSHOT_DIR [WIDTH...]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, shots, ...widthArgs] = process.argv.slice(2);
const widths = widthArgs.length ? widthArgs.map(Number) : [1000, 1280, 360];
const CLICKS = 2;

// Every element of the page that sticks out of its parent's box, or whose content is wider
// than itself (scrollWidth > clientWidth), and whether the document scrolls sideways.
function overflows() {
  const problems = [];
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '');
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth) problems.push(`page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
  for (const el of document.body.querySelectorAll('*')) {
    if (el.tagName === 'SCRIPT' || el.tagName === 'STYLE') continue;
    const style = getComputedStyle(el);
    if (style.display === 'none') continue;
    const box = el.getBoundingClientRect(), parent = el.parentElement.getBoundingClientRect();
    if (box.left < parent.left - 0.5 || box.right > parent.right + 0.5)
      problems.push(`${name(el)} [${box.left | 0}, ${box.right | 0}] outside ${name(el.parentElement)} [${parent.left | 0}, ${parent.right | 0}]`);
    if (style.display !== 'inline' && el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0)
      problems.push(`${name(el)} content ${el.scrollWidth} px wide in ${el.clientWidth} px: "${el.textContent.slice(0, 60)}"`);
  }
  return problems;
}

const profile = mkdtempSync(join(tmpdir(), 'tether-chromium-'));
const report = { widths: [], http_errors: [], failed_requests: [], console_errors: [], responses: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('response', (r) => {
    report.responses.push(`${r.status()} ${new URL(r.url()).pathname}`);
    if (r.status() >= 400) report.http_errors.push(`${r.status()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => {
    // The abandoned /wait is the point of the demo; anything else failing is not.
    if (!new URL(r.url()).pathname.startsWith('/wait')) report.failed_requests.push(`${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  page.on('pageerror', (e) => report.console_errors.push(String(e)));

  for (const width of widths) {
    await page.setViewportSize({ width, height: 900 });
    await page.goto(url, { waitUntil: 'load' });
    const rows = [];
    for (let i = 1; i <= CLICKS; i++) {
      await page.click('#go');
      await page.waitForFunction((n) => document.querySelectorAll('#rows tr').length >= n, i);
      await page.waitForFunction(() => !document.getElementById('go').disabled);  // its clock check done
      rows.push(await page.$$eval('#rows tr:last-child td', (cells) => cells.map((c) => c.textContent)));
    }
    const notes = await page.$$eval('#notes p', (ps) => ps.map((p) => p.textContent));
    const problems = await page.evaluate(overflows);
    const screenshot = join(shots, `demo-${width}.png`);
    await page.screenshot({ path: screenshot, fullPage: true });
    report.widths.push({ width, rows, notes, problems, screenshot });
  }
  await page.waitForTimeout(200);  // a late favicon request is reported too
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
