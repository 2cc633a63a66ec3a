// Two operators' browsers (two Chromium contexts: separate cookies, storage and connections) on
// the dashboard of `make up`, through its load balancer:
//   node two-dashboards-test.mjs <base url> <screenshot dir>
// Prints a JSON line per phase and waits for the test's lines on stdin:
//   {"phase":"live", operators}           both pages live; each shows who is online
//   < "reload b"                           (as often as the test wants) page B loads again
//   < "alert <product>"                    a stock-out was published
//   {"phase":"acked", acked}               page A acknowledged it; both pages show who did
//   < "alert <product>"                    another, which no one acknowledges
//   {"phase":"seen"}                       both pages show it, unacknowledged
//   < "done"
//   {"phase":"done", consoleErrors, failed} and the screenshots
// Every wait is bounded.
import { launch } from './chromium.mjs';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const waiting = [];
const queued = [];
const rl = createInterface({ input: process.stdin });
rl.on('line', (l) => (waiting.length ? waiting.shift()(l) : queued.push(l)));
const line = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r)));
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const browser = await launch();
try {
  const consoleErrors = [];
  const failed = [];
  const pages = [];
  // Page b's own requests that its reload aborts (its stream) are the test's doing, not failures.
  let reloading = false;
  for (const name of ['a', 'b']) {
    const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => consoleErrors.push(`${name}: ${e}`));
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`${name}: ${m.text()}`); });
    page.on('requestfailed', (r) => {
      const error = r.failure()?.errorText;
      if (!(name === 'b' && reloading && error === 'net::ERR_ABORTED')) failed.push(`${name}: ${r.url()} ${error}`);
    });
    page.on('response', (r) => { if (r.status() >= 400) failed.push(`${name}: ${r.url()} ${r.status()}`); });
    // One after the other: nginx gives the second stream to the gateway with fewer (least_conn).
    await page.goto(base, { timeout: 15000 });
    await page.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 });
    pages.push(page);
  }
  const live = async () => {
    for (const page of pages) {
      await page.locator('#conn[data-status="live"]').waitFor({ timeout: 15000 });
      await page.locator('#operators:not([hidden])').waitFor({ timeout: 15000 });
    }
    const operators = await Promise.all(pages.map((p) => p.locator('#operators').textContent()));
    say({ phase: 'live', operators: operators.map((t) => t.trim()) });
  };
  await live();
  // The test may find both streams on one gateway (a request of the first page was in flight on
  // the other as the second stream came): the second page loads again.
  let next = await line();
  while (next === 'reload b') {
    reloading = true;
    await pages[1].reload({ timeout: 15000 });
    await live();
    reloading = false;
    next = await line();
  }

  const row = (page, product) => page.locator(`#feed li.alert[data-id="${product}"]`).first();
  let product = next.split(' ')[1];
  for (const page of pages) await row(page, product).waitFor({ timeout: 15000 });
  await row(pages[0], product).locator('button.ack').click();
  const acked = [];
  for (const page of pages) {
    await page.locator(`#feed li.alert[data-id="${product}"][data-acked-by]`).first().waitFor({ timeout: 15000 });
    acked.push((await row(page, product).locator('.acked').textContent()).trim());
  }
  say({ phase: 'acked', acked });

  product = (await line()).split(' ')[1];
  for (const page of pages) await row(page, product).waitFor({ timeout: 15000 });
  const unacked = await Promise.all(pages.map((p) => row(p, product).getAttribute('data-acked-by')));
  say({ phase: 'seen', unacked });

  await line();
  await pages[0].screenshot({ path: `${shots}/dashboard-a.png`, fullPage: true });
  await pages[1].screenshot({ path: `${shots}/dashboard-b.png`, fullPage: true });
  say({ phase: 'done', consoleErrors, failed });
} finally {
  await browser.close();
  rl.close();
}
