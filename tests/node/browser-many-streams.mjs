// Many EventSources in one page of Debian's Chromium, headless, driven by puppeteer-core.
// Usage: node browser-many-streams.mjs PAGE_URL PATH N SECONDS
// Loads PAGE_URL, opens N EventSources on PATH, prints "ready" once N are open (or
// SECONDS passed), then waits until each has a message (or SECONDS passed) and prints
// {"opened": n, "withMessage": n, "protocol": "h2" | "http/1.1"} as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const [pageUrl, path, n, seconds] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'fastsse-chromium-'));
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  acceptInsecureCerts: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--ignore-certificate-errors', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const waitUntil = async (page, check, ms) => {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !(await page.evaluate(check))) {
    await new Promise((r) => setTimeout(r, 100));
  }
};
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  await page.evaluate((p, count) => {
    window.streams = [];
    for (let i = 0; i < count; i++) {
      const s = { opened: false, got: 0 };
      const es = new EventSource(p);
      es.onopen = () => { s.opened = true; };
      es.onmessage = () => { s.got++; };
      window.streams.push(s);
    }
  }, path, Number(n));
  const ms = Number(seconds) * 1000;
  await waitUntil(page, () => window.streams.every((s) => s.opened), ms);
  console.log('ready');
  await waitUntil(page, () => window.streams.every((s) => s.got > 0), ms);
  const result = await page.evaluate(() => ({
    opened: window.streams.filter((s) => s.opened).length,
    withMessage: window.streams.filter((s) => s.got > 0).length,
    protocol: performance.getEntriesByType('navigation')[0].nextHopProtocol,
  }));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
