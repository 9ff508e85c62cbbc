// One page of Debian's Chromium, headless (puppeteer-core), with one EventSource.
// Usage: node browser-eventsource.mjs PAGE_URL STREAM_URL WANT SECONDS [COOKIE] [credentials]
// Loads PAGE_URL, sets COOKIE ("name=value", for the page's origin) if given, opens
// new EventSource(STREAM_URL, {withCredentials}) and prints "ready" once it is open (or failed);
// then waits until WANT messages arrived (or SECONDS passed) and prints
// {"got": [...data], "readyState": n, "errors": n, "opened": n} as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const [pageUrl, hubUrl, want, seconds, cookie, credentials] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'fastsse-chromium-'));
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  // *.test names are 127.0.0.1: pages on origins of their own without DNS.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--host-resolver-rules=MAP *.test 127.0.0.1',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  if (cookie) {
    await page.evaluate((c) => { document.cookie = `${c}; path=/; SameSite=Lax`; }, cookie);
  }
  await page.evaluate((url, withCredentials) => {
    window.got = []; window.errors = 0; window.opened = 0;
    const es = new EventSource(url, { withCredentials });
    window.es = es;
    es.onmessage = (e) => window.got.push(e.data);
    es.onerror = () => { window.errors++; };
    es.onopen = () => { window.opened++; };
  }, hubUrl, credentials === 'credentials');
  await page.waitForFunction(() => window.opened + window.errors >= 1, { timeout: 15000 });
  console.log('ready');
  const deadline = Date.now() + Number(seconds) * 1000;
  while (Date.now() < deadline) {
    const n = await page.evaluate(() => window.got.length);
    if (n >= Number(want)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const result = await page.evaluate(() => ({
    got: window.got, readyState: window.es.readyState, errors: window.errors, opened: window.opened,
  }));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
