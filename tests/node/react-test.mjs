// The npm package in a real React + TanStack Query page, built with vite and served by vite's
// preview server over plain HTTP/1.1 (it proxies /api to the gateway), in Debian's Chromium:
//   node react-test.mjs <gateway base url> <free port for the page>
// 1. an event invalidates exactly the queries the design's table maps it to, and they refetch;
// 2. 8 tabs of the origin are all live on one stream (a browser allows 6 HTTP/1.1 connections
//    per origin: a stream per tab would leave the seventh hanging);
// 3. closing the leader's tab loses nothing: every other tab gets every event once.
// Prints one JSON line with what it measured. Every wait is bounded.
import { build, preview } from 'vite';
import { launch } from './chromium.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [gateway, port] = process.argv.slice(2);
const root = new URL('./react-app/', import.meta.url).pathname;
const outDir = mkdtempSync(join(tmpdir(), 'rakuda-react-'));
const log = (m) => process.stderr.write(`${m}\n`);
// The package's React imports resolve to the page's own copies (one React, one QueryClient).
const resolve = { dedupe: ['react', 'react-dom', '@tanstack/react-query'] };
// logLevel error: TanStack's "use client" directives are warned about at every file.
await build({ root, configFile: false, logLevel: 'error', resolve, build: { outDir, emptyOutDir: true } });
const server = await preview({
  root, configFile: false, logLevel: 'warn', resolve, build: { outDir },
  preview: { host: '127.0.0.1', port: Number(port), strictPort: true, proxy: { '/api': { target: gateway } } },
});
const base = `http://127.0.0.1:${port}`;

const token = (await (await fetch(`${gateway}/api/dev/token?sub=react-test&role=admin`)).json()).token;
const auth = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
async function publish(event) {
  const r = await fetch(`${gateway}/api/realtime/publish`, { method: 'POST', headers: auth, body: JSON.stringify(event) });
  if (!r.ok) throw new Error(`publish: HTTP ${r.status} ${await r.text()}`);
}
const event = (channel, type, id) => ({ channel, type, payload: { id, action: 'updated', data: {} } });
const streams = async () => (await (await fetch(`${gateway}/api/realtime/connections`, { headers: auth })).json()).count;
// The gateway's count once it settles at `n` (a closed tab's stream is gone when a write to it
// fails), polled for at most 10 s; the last count otherwise.
async function streamsSettle(n) {
  let count;
  for (const deadline = Date.now() + 10000; Date.now() < deadline;) {
    if ((count = await streams()) === n) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return count;
}

// Tabs in the background are not throttled in a test: each must keep up.
const browser = await launch(['--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows']);
const result = {};
const errors = [];
try {
  const context = await browser.newContext();
  const open = async () => {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(base);
    return page;
  };
  const live = (page) => page.waitForFunction(() => window.__rt?.status === 'live', null, { timeout: 20000 });
  const fetches = (page) => page.evaluate(() => ({ ...window.__fetches }));
  const hasAll = (page, ids) => page.waitForFunction((ids) => ids.every((id) => window.__events.includes(id)), ids, { timeout: 20000 });

  // 1. Invalidation.
  const first = await open();
  await live(first);
  await first.waitForFunction(() => ['orders', 'inventory', 'pricing'].every((k) => window.__fetches[k] === 1), null, { timeout: 10000 });
  await publish(event('orders', 'ORDER_RECEIVED', 'inv-order'));
  await first.waitForFunction(() => window.__fetches.orders === 2, null, { timeout: 10000 });
  // The page takes events in order: once the price change has refetched pricing, the order's
  // invalidation is long done, and inventory was never touched.
  await publish(event('pricing', 'PRICE_CHANGE', 'inv-price'));
  await first.waitForFunction(() => window.__fetches.pricing === 2, null, { timeout: 10000 });
  result.fetches = await fetches(first);
  log(`invalidation: ${JSON.stringify(result.fetches)}`);

  // 2. Eight tabs, one stream.
  const pages = [first];
  for (let i = 1; i < 8; i++) pages.push(await open());
  await Promise.all(pages.map(live));
  result.roles = await Promise.all(pages.map((p) => p.evaluate(() => window.__rt.role)));
  result.streams = await streams();
  await publish(event('orders', 'ORDER_RECEIVED', 'all-tabs'));
  await Promise.all(pages.map((p) => hasAll(p, ['all-tabs'])));
  result.allTabsGotIt = pages.length;
  log(`tabs: ${result.roles.join(',')} streams=${result.streams}`);

  // 3. The leader's tab closes in the middle of 40 events.
  const leader = pages[result.roles.indexOf('leader')];
  const others = pages.filter((p) => p !== leader);
  const ids = Array.from({ length: 40 }, (_, i) => `handover-${i}`);
  for (const [i, id] of ids.entries()) {
    if (i === 15) await leader.close();
    await publish(event('inventory', 'INVENTORY_CHANGE', id));
  }
  await Promise.all(others.map((p) => hasAll(p, ids)));
  result.handover = await Promise.all(others.map((p) => p.evaluate((ids) => ids.map((id) => window.__events.filter((e) => e === id).length), ids)));
  result.rolesAfter = await Promise.all(others.map((p) => p.evaluate(() => window.__rt.role)));
  result.streamsAfter = await streamsSettle(1);
  log(`after the leader closed: ${result.rolesAfter.join(',')} streams=${result.streamsAfter}`);
} catch (e) {
  result.error = String(e?.stack || e);
} finally {
  result.errors = errors;
  await browser.close().catch(() => {});
  await new Promise((r) => server.httpServer.close(r));
  rmSync(outDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
