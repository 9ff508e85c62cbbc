// A real browser's EventSource: Debian's Chromium, headless, driven by puppeteer-core.
// Usage: node browser-eventsource.mjs ORIGIN PATH WANT SECONDS
// Loads ORIGIN/status (so the stream is same-origin), opens new EventSource(PATH), prints
// "ready" once it is open, then waits until WANT messages arrived (or SECONDS passed) and prints
// {"got": [...data], "readyState": n, "errors": n, "opened": n} as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const [origin, path, want, seconds] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'fastsse-chromium-'));
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(`${origin}/status`);
  await page.evaluate((p) => {
    window.got = []; window.errors = 0; window.opened = 0;
    const es = new EventSource(p);
    window.es = es;
    es.onmessage = (e) => window.got.push(e.data);
    es.onerror = () => { window.errors++; };
    es.onopen = () => { window.opened++; };
  }, path);
  await page.waitForFunction(() => window.opened >= 1, { timeout: 15000 });
  console.log('ready');
  const deadline = Date.now() + Number(seconds) * 1000;
  while (Date.now() < deadline) {
    const n = await page.evaluate(() => window.got.length);
    if (n >= Number(want)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const result = await page.evaluate(() => ({
    got: window.got, readyState: window.es.readyState, errors: window.errors, opened: window.opened,
  }));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
