// The dashboard in Debian's Chromium, driven by playwright-core (no browser download):
//   node browser-test.mjs <base url> <screenshot dir> memory
//   node browser-test.mjs <base url> <screenshot dir> quiet    (AUTH_MODE=none: no failed request)
//   node browser-test.mjs <base url> <screenshot dir> redis    (then follows the test's stdin:
//        "stopped" after Redis was stopped, "restarted <id>,<id>,..." after it came back and
//        those payload ids were published straight into Redis)
// Prints progress lines and, last, one JSON line with what it measured. Every wait is bounded.
import { launch } from './chromium.mjs';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

const [base, shots, mode] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
// The test's lines, queued: one may arrive before the script waits for it.
const queued = [];
const waiting = [];
createInterface({ input: process.stdin }).on('line', (l) => (waiting.length ? waiting.shift()(l) : queued.push(l)));
const nextLine = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r)));

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
// Every stream the page opens and how it was answered (a failure's diagnosis).
const streams = [];
const t00 = Date.now();
page.on('request', (r) => { if (r.url().includes('/api/realtime/events')) streams.push({ at: Date.now() - t00, url: r.url().replace(/ticket=[^&]*/, 'ticket=…') }); });
page.on('response', (r) => { if (r.url().includes('/api/realtime/events')) streams.push({ at: Date.now() - t00, status: r.status() }); });
page.on('requestfailed', (r) => { if (r.url().includes('/api/realtime/events')) streams.push({ at: Date.now() - t00, failed: r.failure()?.errorText }); });

// make run's AUTH_MODE=dev: the test takes a token where the dashboard takes its own.
const devToken = (await (await fetch(`${base}/api/dev/token?sub=browser-test&role=admin`)).json()).token;
const auth = { 'content-type': 'application/json', authorization: `Bearer ${devToken}` };
async function publish(events) {
  const r = await fetch(`${base}/api/realtime/publish`, {
    method: 'POST', headers: auth, body: JSON.stringify(events),
  });
  if (!r.ok) throw new Error(`publish: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}
const order = (id) => ({ channel: 'orders', type: 'ORDER_RECEIVED',
  payload: { id, action: 'created', data: { marketplace: 'ebay', total: 129.5, currency: 'USD', items: 1 } } });
const price = (id, n) => ({ channel: 'pricing', type: 'PRICE_CHANGE',
  payload: { id, action: 'updated', data: { oldPrice: 10 + n, newPrice: 11 + n, currency: 'EUR', reason: 'sync' } } });
const stockout = (id) => ({ channel: 'inventory', type: 'INVENTORY_CHANGE',
  payload: { id, action: 'updated', data: { isAvailable: false, wasAvailable: true, priceChanged: false, price: 5, currency: 'USD' } } });

// Publishes one event and measures until both its toast and its feed entry are visible.
async function toastAndFeed(event) {
  const id = event.payload.id;
  const start = Date.now();
  const toast = page.locator('.toast', { hasText: id }).first().waitFor({ state: 'visible', timeout: 10000 });
  const feed = page.locator(`#feed li[data-id="${id}"]`).waitFor({ state: 'visible', timeout: 10000 });
  await publish(event);
  await Promise.all([toast, feed]);
  return Date.now() - start;
}

try {
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await page.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 });
  out({ phase: 'live' });
  if (mode === 'quiet') {
    // As under `make up` (AUTH_MODE=none, no development pages): the page asks for nothing
    // the gateway does not serve. Through a round of its periodic loads, every request it
    // made is listed with its answer when that failed.
    const failed = [];
    const fresh = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    fresh.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    fresh.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`); });
    fresh.on('requestfailed', (r) => failed.push(`${r.failure()?.errorText} ${new URL(r.url()).pathname}`));
    await fresh.goto(base, { waitUntil: 'domcontentloaded' });
    await fresh.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 });
    await new Promise((r) => setTimeout(r, 11000));
    out({ consoleErrors, failed });
  } else if (mode === 'memory') {
    const latencies = [];
    latencies.push(await toastAndFeed(order('ord_browser_1')));
    latencies.push(await toastAndFeed(stockout('prod_browser_1')));
    latencies.push(await toastAndFeed(price('lst_browser_1', 0)));
    // Toasts never take focus nor catch clicks: a click on a filter works while they show.
    const focusIsToast = await page.evaluate(() => !!document.activeElement?.closest('.toast'));
    const toastPointer = await page.evaluate(() => getComputedStyle(document.querySelector('.toast')).pointerEvents);
    await page.locator('.filters button[data-filter="orders"]').click();
    const visible = await page.locator('#feed li:visible').evaluateAll((els) => els.map((e) => e.dataset.channel));
    await page.locator('.filters button[data-filter="all"]').click();
    // A burst of 12 price changes right after the single one: one toast that says so (the
    // gateway groups the burst; the open price toast takes it in: 13).
    await publish(Array.from({ length: 12 }, (_, i) => price(`lst_burst_${i}`, i)));
    await page.locator('.toast', { hasText: '13 price changes' }).waitFor({ state: 'visible', timeout: 10000 });
    const toasts = await page.locator('.toast').count();
    const feedCount = await page.locator('#feed li').count();
    await page.screenshot({ path: `${shots}/dashboard.png` });
    // The bell, on two devices of the same user: a notification shows on both; read on one,
    // it clears on the other.
    const other = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    other.on('pageerror', (e) => consoleErrors.push(String(e)));
    await other.goto(base, { waitUntil: 'domcontentloaded' });
    await other.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 });
    const r = await fetch(`${base}/api/notifications`, {
      method: 'POST', headers: auth,
      body: JSON.stringify({ user_id: 'dev', type: 'warning', title: 'Out of stock: prod_bell_1', message: 'listings paused' }),
    });
    if (r.status !== 201) throw new Error(`notify: HTTP ${r.status} ${await r.text()}`);
    const { id } = await r.json();
    await page.locator('#bell-badge:visible', { hasText: '1' }).waitFor({ timeout: 10000 });
    await other.locator('#bell-badge:visible', { hasText: '1' }).waitFor({ timeout: 10000 });
    const notifyToast = await page.locator('.toast.notify', { hasText: 'prod_bell_1' }).count();
    await page.locator('#bell').click();
    await page.locator(`#bell-list li[data-id="${id}"][data-read="false"]`).waitFor({ timeout: 10000 });
    await page.screenshot({ path: `${shots}/bell.png` });
    const t0 = Date.now();
    await page.locator(`#bell-list li[data-id="${id}"]`).click();
    await other.locator('#bell-badge').waitFor({ state: 'hidden', timeout: 10000 });
    const clearMs = Date.now() - t0;
    const readOnA = await page.locator(`#bell-list li[data-id="${id}"]`).getAttribute('data-read');
    await other.close();
    // The JS client's WebSocket mode in the browser: live, an event through it, a command's ack.
    await page.evaluate(async () => {
      const { RealtimeClient } = await import('/realtime-client.js');
      const token = (await (await fetch('/api/dev/token?sub=ws-page')).json()).token;
      const rt = new RealtimeClient({ transport: 'ws', channels: ['orders'], notifications: false, token });
      window.__wsOrder = new Promise((resolve) => rt.on('ORDER_RECEIVED', (ev) => resolve(ev.payload.id)));
      rt.start();
      const t0 = Date.now();
      while (rt.status !== 'live') {
        if (Date.now() - t0 > 10000) throw new Error(`ws client not live: ${rt.status}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      window.__ws = rt;
    });
    await publish(order('ord_ws_1'));
    const ws = await page.evaluate(async () => {
      const id = await Promise.race([window.__wsOrder, new Promise((r) => setTimeout(() => r(null), 10000))]);
      const pong = await window.__ws.command({ op: 'ping' });
      window.__ws.stop();
      return { id, pong: pong.op };
    });
    // 8 tabs of one browser (one context: a window's tabs share its connections, 6 per host
    // over HTTP/1.1): every one live, on one stream, and an order reaches every one.
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    let tabStreams = 0;
    ctx.on('request', (q) => { if (q.url().includes('/api/realtime/events')) tabStreams += 1; });
    const tabs = [];
    for (let i = 0; i < 8; i++) {
      const tab = await ctx.newPage();
      tab.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`tab ${i}: ${m.text()}`); });
      tab.on('pageerror', (e) => consoleErrors.push(`tab ${i}: ${e}`));
      await tab.goto(base, { waitUntil: 'domcontentloaded' });
      tabs.push(tab);
    }
    await Promise.all(tabs.map((t) => t.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 })));
    await publish(order('ord_tabs_1'));
    await Promise.all(tabs.map((t) => t.locator('#feed li[data-id="ord_tabs_1"]').waitFor({ state: 'visible', timeout: 10000 })));
    const tabsLive = tabs.length;
    await ctx.close();
    out({ latencies, focusIsToast, toastPointer, filtered: visible, feedCount, toasts, consoleErrors,
      bell: { notifyToast, clearMs, readOnA }, ws, tabs: { live: tabsLive, streams: tabStreams } });
  } else {
    await page.screenshot({ path: `${shots}/redis-live.png` });
    const stopped = await nextLine();
    if (stopped.trim() !== 'stopped') throw new Error(`expected "stopped", got ${stopped}`);
    const t0 = Date.now();
    await page.locator('#conn[data-status="disconnected"]').waitFor({ timeout: 20000 });
    out({ phase: 'red', afterMs: Date.now() - t0 });
    await page.screenshot({ path: `${shots}/redis-down.png` });
    const restarted = await nextLine();
    const ids = restarted.trim().replace(/^restarted /, '').split(',');
    const t1 = Date.now();
    try {
      await page.locator('#conn[data-status="live"]').waitFor({ timeout: 30000 });
      for (const id of ids) await page.locator(`#feed li[data-id="${id}"]`).waitFor({ state: 'attached', timeout: 30000 });
    } catch (e) {
      // What the page and the gateway saw, for the test's failure message.
      const feed = await page.locator('#feed li').evaluateAll((els) => els.map((el) => el.dataset.id)).catch(() => null);
      const conn = await page.locator('#conn').getAttribute('data-status').catch(() => null);
      const status = await (await fetch(`${base}/api/realtime/status`)).json().catch(() => null);
      const metrics = (await (await fetch(`${base}/metrics`)).text().catch(() => ''))
        .split('\n').filter((l) => /^realtime_(upstream|resync|reconnect|connections|events_(published|delivered))/.test(l));
      process.stderr.write(`${JSON.stringify({ afterMs: Date.now() - t1, conn, feed, streams, status, metrics, consoleErrors })}\n`);
      throw e;
    }
    const order = await page.locator('#feed li').evaluateAll((els) => els.map((e) => e.dataset.id));
    await page.screenshot({ path: `${shots}/redis-resumed.png` });
    out({ phase: 'resumed', afterMs: Date.now() - t1, feed: order.slice(0, ids.length + 2), consoleErrors });
  }
} finally {
  await browser.close();
}
process.exit(0);
