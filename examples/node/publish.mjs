// The Phase 27 EventBus as the Node.js code has it (apps/worker/src/lib/event-bus.ts): a plain
// PUBLISH of the event on `rakuda:realtime:<channel>`, no id, no stream. The gateways store it
// once in the channel's stream (bus.adopt_plain_publishes), so it gets an id and a cursor, and
// a client that was away gets it on resume like any other event.
//
//   REDIS_URL=redis://127.0.0.1:6379 node publish.mjs [tag]
//
// Prints {"channel", "receivers"}: how many subscribers (gateways) heard it.
import { Redis } from 'ioredis';

const EVENT_CHANNELS = {
  INVENTORY: 'rakuda:realtime:inventory',
  ORDERS: 'rakuda:realtime:orders',
  PRICING: 'rakuda:realtime:pricing',
  LISTINGS: 'rakuda:realtime:listings',
};

class EventBus {
  constructor(url) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 3 });
  }
  async publish(channel, event) {
    return this.redis.publish(channel, JSON.stringify(event));
  }
  async close() {
    await this.redis.quit();
  }
}

const tag = process.argv[2] || String(Date.now());
const bus = new EventBus(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
try {
  const receivers = await bus.publish(EVENT_CHANNELS.ORDERS, {
    type: 'ORDER_RECEIVED',
    payload: { id: `ord_pub_${tag}`, action: 'created', data: { marketplace: 'amazon', total: 42 } },
    timestamp: new Date().toISOString(),
  });
  console.log(JSON.stringify({ channel: EVENT_CHANNELS.ORDERS, receivers }));
} finally {
  await bus.close();
}
