// The dashboard's destinations panel in Debian's Chromium (playwright-core):
//   node destinations-test.mjs <gateway base url> <screenshot path> <name>=<state>[,...]
// Waits (bounded) until the panel shows each named destination in that state, then prints one
// JSON line: each row's cells as shown, and the page's console errors.
import { launch } from './chromium.mjs';

const [base, shot, expected] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(base, { timeout: 15000 });
  for (const pair of expected.split(',')) {
    const [name, state] = pair.split('=');
    await page.locator(`#sinks tr[data-name="${name}"][data-state="${state}"]`).waitFor({ state: 'visible', timeout: 15000 });
  }
  await page.screenshot({ path: shot, fullPage: true });
  const rows = await page.$$eval('#sinks-rows tr', (trs) => trs.map((tr) => ({
    name: tr.dataset.name,
    state: tr.dataset.state,
    cells: [...tr.children].map((td) => td.textContent),
  })));
  process.stdout.write(JSON.stringify({ rows, consoleErrors }) + '\n');
} finally {
  await browser.close();
}
