// The BullMQ side of `make soak`: real npm `bullmq` adds order jobs at a steady rate, as the
// existing Node.js code does. Usage:
//   REDIS_PORT=6390 RATE=100 node soak-producer.mjs
// Each order id is `soak-<seq>-<ms>` (<ms>: when the job was added, for the latency). Every
// 100 ms it prints one JSON line: {"acked":[seq...],"failed":[seq...]}. It stops on SIGTERM
// (or when stdin closes) after the adds in flight are settled, printing {"done":true}.
import { Queue } from 'bullmq';

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) };
const rate = Number(process.env.RATE || 100);
const q = new Queue('orders', { connection });
q.on('error', () => {}); // a Redis restart: ioredis reconnects by itself
let seq = 0;
let acked = [];
let failed = [];
let stopping = false;
const inflight = new Set();

function add() {
  const n = seq++;
  const data = { orderId: `soak-${n}-${Date.now()}`, marketplace: 'ebay', total: 10, currency: 'USD', items: 1 };
  // Kept few in Redis (the soak watches Redis's memory); retried like production jobs.
  const opts = { attempts: 20, backoff: { type: 'fixed', delay: 500 }, removeOnComplete: 1000, removeOnFail: 1000 };
  const p = Promise.race([
    q.add('order', data, opts),
    new Promise((_, reject) => setTimeout(() => reject(new Error('add took over 10 s')), 10_000)),
  ]).then(() => acked.push(n), () => failed.push(n));
  inflight.add(p);
  p.finally(() => inflight.delete(p));
}

// Paced on the clock: `rate` per second however late a tick runs.
const start = Date.now();
const tick = setInterval(() => {
  if (stopping) return;
  const due = Math.floor(((Date.now() - start) / 1000) * rate);
  while (seq < due) add();
}, 10);
const report = setInterval(() => {
  if (acked.length || failed.length) {
    process.stdout.write(JSON.stringify({ acked, failed }) + '\n');
    acked = [];
    failed = [];
  }
}, 100);

async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(tick);
  await Promise.allSettled([...inflight]);
  clearInterval(report);
  process.stdout.write(JSON.stringify({ acked, failed }) + '\n');
  process.stdout.write(JSON.stringify({ done: true }) + '\n');
  await q.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
