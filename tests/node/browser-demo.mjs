// The demo console in Debian's Chromium, headless (puppeteer-core), two tabs.
// Usage: node browser-demo.mjs URL SCREENSHOT
// Prints one JSON line: what each panel showed, whether a publish from tab 1 reached tab 2,
// whether tab 2 replayed what was published while it was away, and the chat.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const [url, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'fastsse-chromium-'));
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  defaultViewport: { width: 1200, height: 1000 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Two tabs, both live: no throttling of the one in the background.
    '--disable-background-timer-throttling', '--disable-backgrounding-occluded-windows',
    '--disable-renderer-backgrounding'],
  protocolTimeout: 60000,
});
const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
const step = (what) => console.error('browser-demo: ' + what);
const until = async (page, fn, arg, ms = 15000) => {
  step(String(fn).slice(0, 70));
  await page.bringToFront();
  try { await page.waitForFunction(fn, { timeout: ms, polling: 100 }, arg); return true; }
  catch { return false; }
};
try {
  const one = await browser.newPage();
  const two = await browser.newPage();
  await one.goto(url);
  await two.goto(url);
  console.log('ready');
  const result = {};
  result.clock = await until(one, () => /\d/.test(document.getElementById('clock').textContent));
  result.ticker = await until(one, () => document.querySelectorAll('#ticks li').length >= 2);
  result.figures = await until(one, () => Number(document.getElementById('fig-streams').textContent) >= 4
    && document.querySelector('#chart-streams polyline') !== null);
  result.topicsOpen = await until(two, () => document.getElementById('topics-state').textContent === 'open');
  // A publish from the form in tab 1 appears in tab 2.
  const word = 'demo-' + Date.now();
  step('fill pub-data');
  await one.bringToFront();
  await one.$eval('#pub-data', (e, w) => { e.value = w; }, word);
  await one.$eval('#pub-form', (f) => f.requestSubmit());
  result.published = await until(one, () => /stored as id/.test(document.getElementById('pub-result').textContent));
  result.secondTab = await until(two, (w) => document.getElementById('topic-log').textContent.includes(w), word);
  // Tab 2 stops listening; tab 1 publishes; tab 2 is reloaded and gets it from history
  // (the last id it saw is kept in the tab's sessionStorage).
  await two.evaluate(() => topics.close());
  const away = 'while-away-' + Date.now();
  await one.bringToFront();
  await one.$eval('#pub-data', (e, w) => { e.value = w; }, away);
  await one.$eval('#pub-form', (f) => f.requestSubmit());
  await until(one, (w) => document.getElementById('topic-log').textContent.includes(w), away);
  await two.reload();
  result.replayed = await until(two, (w) => document.getElementById('topic-log').textContent.includes(w), away);
  // The chat.
  await one.bringToFront();
  await one.$eval('#chat-text', (e) => { e.value = 'hi from tab one'; });
  await one.$eval('#chat-form', (f) => f.requestSubmit());
  result.chat = await until(two, () => document.getElementById('chat').textContent.includes('hi from tab one'));
  if (!result.chat) {
    result.chatOne = await one.$eval('#chat', (e) => e.textContent);
    result.chatTwo = await two.$eval('#chat', (e) => e.textContent);
    result.stateTwo = await two.$eval('#topics-state', (e) => e.textContent);
  }
  await one.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
