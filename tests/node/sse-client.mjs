// A dashboard's EventSource, driven by the Rust tests. Prints one JSON line per thing it sees.
//
//   node sse-client.mjs <url> onmessage <count>
//     The Phase 27 React hook: onmessage, JSON.parse, switch on `type`.
//   node sse-client.mjs <url> named <count> <type>[,<type>...]
//     The task-board hook: named=true streams, addEventListener(type) for each type.
//
// Lines: {"open":true} on each (re)connection, {"error":true} on errors, and for each event
// {"via": "onmessage"|"<type>", "type", "payloadId", "count", "lastEventId"}. Exits after <count>
// events. EventSource reconnects by itself with Last-Event-ID, as a browser does.
import { EventSource } from 'eventsource';

const [url, mode, countText, types = ''] = process.argv.slice(2);
const want = Number(countText);
let seen = 0;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const es = new EventSource(url);

function handle(via, e) {
  const ev = JSON.parse(e.data);
  let kind;
  switch (ev.type) {
    case 'ORDER_RECEIVED': kind = 'order'; break;
    case 'INVENTORY_CHANGE': kind = 'inventory'; break;
    case 'PRICE_CHANGE': kind = 'price'; break;
    case 'RESYNC': kind = 'resync'; break;
    default: kind = 'other';
  }
  const ids = ev.payloads ? ev.payloads.map((p) => p.id) : ev.payload ? [ev.payload.id] : [];
  out({ via, kind, type: ev.type, ids, count: ev.count ?? 1, lastEventId: e.lastEventId });
  seen += ids.length || 1;
  if (seen >= want) {
    es.close();
    process.exit(0);
  }
}

es.onopen = () => out({ open: true });
es.onerror = () => out({ error: true });
if (mode === 'onmessage') {
  es.onmessage = (e) => handle('onmessage', e);
} else if (mode === 'named') {
  // A named stream must not reach onmessage: every event has an event: line.
  es.onmessage = (e) => out({ via: 'onmessage-unexpected', data: e.data });
  for (const t of types.split(',')) es.addEventListener(t, (e) => handle(t, e));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
setTimeout(() => { console.error('timed out'); process.exit(3); }, 60_000);
