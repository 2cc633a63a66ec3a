// The Node side of the worker-emitter interop tests: real npm `bullmq` producers (and one
// Node worker) against the queues the Rust worker processes. Usage:
//   REDIS_PORT=6379 node bullmq-driver.mjs <scenario> [args...]
// Prints progress lines and, last, one JSON line with what it observed; exits non-zero with a
// message when something did not happen in time. Every wait is bounded.
import http from 'node:http';
import { Queue, QueueEvents, Worker } from 'bullmq';

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) };
const [scenario, ...args] = process.argv.slice(2);
const T = 30_000;

function out(v) {
  process.stdout.write(JSON.stringify(v) + '\n');
}

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Records every QueueEvents event per job id, in order. It reads the queue's event stream from
// its start (each test has its own redis-server): a QueueEvents reading from "now" misses what
// happens between waitUntilReady and its first XREAD.
async function recorder(name) {
  const qe = new QueueEvents(name, { connection, lastEventId: '0-0' });
  await qe.waitUntilReady();
  const seen = new Map();
  for (const ev of ['added', 'waiting', 'active', 'delayed', 'completed', 'failed', 'retries-exhausted', 'stalled']) {
    qe.on(ev, (e) => {
      const id = e.jobId;
      if (!seen.has(id)) seen.set(id, []);
      seen.get(id).push({ ev, returnvalue: e.returnvalue, failedReason: e.failedReason });
    });
  }
  return { qe, seen };
}

const order = (i) => ({
  orderId: `ord_${i}`,
  marketplace: 'ebay',
  total: 129.5,
  currency: 'USD',
  items: [{ sku: 'sku-1', quantity: 1 }],
});

async function complete() {
  const q = new Queue('orders', { connection });
  const { qe, seen } = await recorder('orders');
  const job = await q.add('order', order('node-1'));
  const value = await within(T, 'waitUntilFinished', job.waitUntilFinished(qe, T));
  // The completed event may arrive just after waitUntilFinished resolved: wait for it.
  await within(T, 'completed event', (async () => {
    while (!(seen.get(job.id) || []).some((e) => e.ev === 'completed')) await new Promise((r) => setTimeout(r, 10));
  })());
  const counts = await q.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  out({ jobId: job.id, value, events: seen.get(job.id), counts });
  await qe.close();
  await q.close();
}

async function retries() {
  // A product source that fails the first request of each path that starts with /flaky.
  const hits = new Map();
  const server = http.createServer((req, res) => {
    const n = (hits.get(req.url) || 0) + 1;
    hits.set(req.url, n);
    if (req.url.startsWith('/always-down') || (req.url.startsWith('/flaky') && n === 1)) {
      res.writeHead(500).end('down');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ available: true, price: 10, currency: 'USD' }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const q = new Queue('inventory', { connection });
  const { qe, seen } = await recorder('inventory');
  const fixed = await q.add('inventory-check', { productId: 'p-fixed', sourceUrl: `${base}/flaky-a` },
    { attempts: 3, backoff: { type: 'fixed', delay: 200 } });
  const expo = await q.add('inventory-check', { productId: 'p-expo', sourceUrl: `${base}/flaky-b` },
    { attempts: 3, backoff: { type: 'exponential', delay: 100 } });
  const doomed = await q.add('inventory-check', { productId: 'p-down', sourceUrl: `${base}/always-down` },
    { attempts: 3, backoff: { type: 'fixed', delay: 100 } });
  const invalid = await q.add('inventory-check', { productId: 'p-bad', price: -1 }, { attempts: 3 });
  const fixedValue = await within(T, 'fixed', fixed.waitUntilFinished(qe, T));
  const expoValue = await within(T, 'exponential', expo.waitUntilFinished(qe, T));
  let doomedError = null;
  try {
    await within(T, 'doomed', doomed.waitUntilFinished(qe, T));
  } catch (e) {
    doomedError = e.message;
  }
  let invalidError = null;
  try {
    await within(T, 'invalid', invalid.waitUntilFinished(qe, T));
  } catch (e) {
    invalidError = e.message;
  }
  await within(T, 'retries-exhausted event', (async () => {
    while (!(seen.get(doomed.id) || []).some((e) => e.ev === 'retries-exhausted')) await new Promise((r) => setTimeout(r, 10));
  })());
  const invalidJob = await q.getJob(invalid.id);
  out({
    fixed: { value: fixedValue, events: seen.get(fixed.id).map((e) => e.ev) },
    expo: { value: expoValue, events: seen.get(expo.id).map((e) => e.ev) },
    doomed: { error: doomedError, events: seen.get(doomed.id).map((e) => e.ev), hits: hits.get('/always-down') },
    invalid: { error: invalidError, failedReason: invalidJob.failedReason, attemptsMade: invalidJob.attemptsMade },
  });
  server.close();
  await qe.close();
  await q.close();
}

async function ordering() {
  const q = new Queue('listings', { connection });
  const { qe, seen } = await recorder('listings');
  await q.pause();
  const held = await q.add('listing', { listingId: 'held', status: 'active' });
  // Proving an absence needs a bounded wait: nothing may be taken while paused.
  await new Promise((r) => setTimeout(r, 1500));
  const whilePaused = await q.getJobCounts('waiting', 'paused', 'active', 'completed');
  const order = [];
  qe.on('completed', ({ jobId }) => order.push(jobId));
  const byPriority = [];
  for (const p of [10, 1, 5]) {
    byPriority.push(await q.add('listing', { listingId: `prio-${p}`, status: 'active' }, { priority: p }));
  }
  await q.resume();
  await within(T, 'held', held.waitUntilFinished(qe, T));
  for (const j of byPriority) await within(T, 'prioritized', j.waitUntilFinished(qe, T));
  const delayed = await q.add('listing', { listingId: 'later', status: 'active' }, { delay: 1000 });
  await within(T, 'delayed', delayed.waitUntilFinished(qe, T));
  const d = await q.getJob(delayed.id);
  const prio = Object.fromEntries(byPriority.map((j) => [j.id, j.opts.priority]));
  out({
    whilePaused,
    priorityOrder: order.filter((id) => id in prio).map((id) => prio[id]),
    delayedWaitedMs: d.processedOn - d.timestamp,
    heldEvents: seen.get(held.id).map((e) => e.ev),
  });
  await qe.close();
  await q.close();
}

async function fleet(n) {
  const q = new Queue('listings', { connection });
  const { qe } = await recorder('listings');
  const completions = new Map();
  qe.on('completed', ({ jobId, returnvalue }) => {
    completions.set(jobId, (completions.get(jobId) || 0) + 1);
    const by = (typeof returnvalue === 'string' ? JSON.parse(returnvalue) : returnvalue)?.by;
    if (by === 'node') byNode += 1;
  });
  let byNode = 0;
  let failed = 0;
  qe.on('failed', () => { failed += 1; });
  const worker = new Worker('listings', async () => ({ by: 'node' }), { connection, concurrency: 4 });
  await worker.waitUntilReady();
  out({ ready: true });
  const jobs = [];
  for (let i = 0; i < n; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 500); j++) {
      batch.push({ name: 'listing', data: { listingId: `fleet-${j}`, status: 'active' } });
    }
    jobs.push(...(await q.addBulk(batch)));
  }
  await within(90_000, `${n} completions`, (async () => {
    for (;;) {
      const c = await q.getJobCounts('completed', 'failed');
      if (c.completed + c.failed >= n) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  })());
  // The QueueEvents stream trails the counts by a moment.
  await within(T, 'completed events', (async () => {
    while (completions.size < n) await new Promise((r) => setTimeout(r, 20));
  })());
  const twice = [...completions.values()].filter((c) => c > 1).length;
  const counts = await q.getJobCounts('completed', 'failed', 'waiting', 'active');
  out({ counts, completedEvents: completions.size, completedTwice: twice, failed, byNode, byRust: completions.size - byNode });
  await worker.close();
  await qe.close();
  await q.close();
}

async function flow(n) {
  const q = new Queue('orders', { connection });
  const { qe } = await recorder('orders');
  let stalled = 0;
  qe.on('stalled', () => { stalled += 1; });
  for (let i = 0; i < n; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 500); j++) batch.push({ name: 'order', data: order(`flow-${j}`) });
    await q.addBulk(batch);
  }
  out({ added: n });
  let last = -1;
  await within(240_000, `${n} jobs done`, (async () => {
    for (;;) {
      const c = await q.getJobCounts('completed', 'failed');
      if (c.completed !== last) {
        last = c.completed;
        out({ progress: c });
      }
      if (c.completed + c.failed >= n) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  })());
  out({ counts: await q.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed'), stalled });
  await qe.close();
  await q.close();
}

// Graceful shutdown: a job whose source answers after 1.5 s; prints {active} once the Rust
// worker took it (the test then sends SIGTERM), then whether it completed.
// One inventory job whose source answers `delay` ms after it is asked. The test may restart
// Redis meanwhile: the Queue and QueueEvents reconnect (their errors are not fatal).
async function slow(delay = 1500) {
  const server = http.createServer((req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ available: true, price: 5, currency: 'USD' }));
    }, delay);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const q = new Queue('inventory', { connection });
  q.on('error', () => {});
  const { qe } = await recorder('inventory');
  qe.on('error', () => {});
  const active = new Promise((r) => qe.on('active', r));
  const job = await q.add('inventory-check', { productId: 'p-slow', sourceUrl: `http://127.0.0.1:${server.address().port}/p` });
  await within(T, 'active', active);
  out({ active: job.id });
  const value = await within(T, 'finished', job.waitUntilFinished(qe, T));
  out({ value, state: await (await q.getJob(job.id)).getState() });
  server.close();
  await qe.close();
  await q.close();
}

// make bench: adds n orders to `queue` (all at once when rate is 0, else `rate` per second),
// each order id carrying its add time (b<i>_<ms>) so the receiver measures add -> event; with
// `floor`, a trivial Node worker takes them instead of the Rust worker (the queue's own cost).
async function bench(queue, n, rate, floor) {
  const q = new Queue(queue, { connection });
  let worker = null;
  if (floor === 'floor') {
    worker = new Worker(queue, async () => ({ emitted: [] }), { connection, concurrency: 8 });
    await worker.waitUntilReady();
  }
  const start = Date.now();
  if (rate === 0) {
    for (let i = 0; i < n; i += 500) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + 500); j++) batch.push({ name: 'order', data: order(`b${j}_${Date.now()}`) });
      await q.addBulk(batch);
    }
  } else {
    const perTick = Math.max(1, Math.round(rate / 100));
    let i = 0;
    while (i < n) {
      const due = start + (i / rate) * 1000;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const batch = [];
      for (let k = 0; k < perTick && i < n; k++, i++) batch.push(q.add('order', order(`b${i}_${Date.now()}`)));
      await Promise.all(batch);
    }
  }
  const addedMs = Date.now() - start;
  for (;;) {
    const c = await q.getJobCounts('completed', 'failed');
    if (c.completed + c.failed >= n) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  out({ n, addedMs, doneMs: Date.now() - start });
  if (worker) await worker.close();
  await q.close();
}

async function add(queue, name, json) {
  const q = new Queue(queue, { connection });
  const job = await q.add(name, JSON.parse(json));
  out({ jobId: job.id });
  await q.close();
}

const scenarios = { complete, retries, ordering, fleet, flow, add, bench, slow };
if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  await scenarios[scenario](...args.map((a) => (/^\d+$/.test(a) ? Number(a) : a)));
  process.exit(0);
} catch (e) {
  console.error(`${scenario}: ${e.stack || e}`);
  process.exit(1);
}
