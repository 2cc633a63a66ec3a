// The worker's producers, as the Node.js code adds jobs today (apps/worker: inventory-checker,
// webhooks, price-sync): one job on each queue the worker-emitter processes. The processors
// turn them into INVENTORY_CHANGE, ORDER_RECEIVED and PRICE_CHANGE events on the dashboard.
//
//   REDIS_URL=redis://127.0.0.1:6379 node producer.mjs [tag]
//
// The job data is `proto-schemas/job-*.schema.json`. An inventory check's first observation of
// a product is its baseline (no event), so the product is observed twice: in stock, then, once
// that check is done, out of stock. (Jobs of one queue run concurrently: two checks added at once
// could be decided in either order.)
// With TRACEPARENT set (a W3C traceparent of the producer's own trace), each job carries it in
// its data: the worker's span for the job, and the event it emits, continue that trace.
// Prints one JSON line per job added: {"queue", "name", "id"}.
import { Queue, QueueEvents } from 'bullmq';

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = { host: url.hostname, port: Number(url.port || 6379) };
const tag = process.argv[2] || String(Date.now());
// Retried like the production jobs; not kept for ever once done.
const opts = { attempts: 3, backoff: { type: 'exponential', delay: 500 }, removeOnComplete: 1000, removeOnFail: 1000 };

const baseline = { productId: `prod_node_${tag}`, isAvailable: true, price: 19.99, currency: 'USD', source: 'node-example' };
const jobs = [
  ['inventory', 'inventory-check', { ...baseline, isAvailable: false }],
  ['orders', 'order', { orderId: `ord_node_${tag}`, marketplace: 'ebay', total: 129.5, currency: 'USD', items: 2 }],
  ['pricing', 'price-sync', { listingId: `lst_node_${tag}`, newPrice: 24.5, currency: 'USD', reason: 'competitor' }],
];

const traceparent = process.env.TRACEPARENT;
if (traceparent) for (const data of [baseline, ...jobs.map((j) => j[2])]) data.traceparent = traceparent;

const queues = new Map();
const events = new QueueEvents('inventory', { connection });
try {
  // The baseline first, and its check done, before the stock-out is observed.
  queues.set('inventory', new Queue('inventory', { connection }));
  await events.waitUntilReady();
  const first = await queues.get('inventory').add('inventory-check', baseline, opts);
  await first.waitUntilFinished(events, 30000);
  console.log(JSON.stringify({ queue: 'inventory', name: 'inventory-check', id: first.id }));
  for (const [queue, name, data] of jobs) {
    if (!queues.has(queue)) queues.set(queue, new Queue(queue, { connection }));
    const job = await queues.get(queue).add(name, data, opts);
    console.log(JSON.stringify({ queue, name, id: job.id }));
  }
} finally {
  await events.close();
  await Promise.all([...queues.values()].map((q) => q.close()));
}
