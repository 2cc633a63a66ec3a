// make run's development destinations page (/dev/sinks) in Debian's Chromium (playwright-core):
//   node dev-sinks-test.mjs <base url> <screenshot dir>
// Waits for the page's Web Push subscription, publishes a stock-out and an order, and waits
// (bounded) until each destination's column shows them: Slack, LINE and Web Push (decrypted and
// its VAPID signature checked in the page) the stock-out, the webhook (signature checked) and
// Discord the order. Then the dashboard's destinations panel. Prints one JSON line.
import { launch } from './chromium.mjs';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.goto(`${base}/dev/sinks`, { timeout: 15000 });
  await page.locator('#push-status[data-subscribed="true"]').waitFor({ timeout: 15000 });
  const token = (await (await fetch(`${base}/api/dev/token`)).json()).token;
  const product = `prod_dev_${Date.now()}`;
  const orderId = `ord_dev_${Date.now()}`;
  const r = await fetch(`${base}/api/realtime/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify([
      { channel: 'inventory', type: 'INVENTORY_CHANGE', payload: { id: product, action: 'updated',
        data: { isAvailable: false, wasAvailable: true, priceChanged: false, price: 5, currency: 'USD' } } },
      { channel: 'orders', type: 'ORDER_RECEIVED', payload: { id: orderId, action: 'created',
        data: { marketplace: 'ebay', total: 129.5, currency: 'USD', items: 1 } } },
    ]),
  });
  if (!r.ok) throw new Error(`publish: HTTP ${r.status} ${await r.text()}`);
  const t0 = Date.now();
  const seen = {};
  const wait = async (name, selector) => {
    await page.locator(`#list-${name} ${selector}`).first().waitFor({ timeout: 20000 });
    seen[name] = Date.now() - t0;
  };
  await Promise.all([
    wait('slack', `li:has-text("${product}")`),
    wait('line', `li:has-text("${product}")`),
    wait('push', `li[data-entity="${product}"][data-decrypted="true"]`),
    wait('webhook', `li[data-verified="true"]:has-text("${orderId}")`),
    wait('discord', `li:has-text("${orderId}")`),
  ]);
  const push = page.locator(`#list-push li[data-entity="${product}"]`).first();
  const vapid = await push.getAttribute('data-vapid');
  const pushText = await push.textContent();
  // LINE's message as the stock-out route's template words it.
  const lineText = await page.locator(`#list-line li:has-text("${product}")`).first().textContent();
  await page.screenshot({ path: `${shots}/dev-sinks.png`, fullPage: true });
  // The dashboard lists the same destinations, from the sinks in the process.
  await page.goto(base, { timeout: 15000 });
  await page.locator('#sinks tr[data-name="push"][data-state="healthy"]').waitFor({ timeout: 15000 });
  const rows = await page.$$eval('#sinks-rows tr', (trs) => trs.map((tr) => tr.dataset.name));
  await page.screenshot({ path: `${shots}/dashboard-destinations.png`, fullPage: true });
  process.stdout.write(JSON.stringify({ seen, vapid, pushText, lineText, product, rows, consoleErrors }) + '\n');
} finally {
  await browser.close();
}
