// The gateway's own JS client (/realtime-client.js) in WebSocket mode, on the npm `ws` package,
// driven by the Rust tests:
//   node ws-client.mjs <base url> <token> <count>
// Lines: {"open": true} on each (re)connection, {"close": <code>} when a socket closes,
// {"event": <payload id>, "cursor": "..."} per ORDER_RECEIVED (grouped ones each), and, once
// <count> events arrived, {"pong": <ack>} from a command over the socket; then it exits.
import { WebSocket } from 'ws';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [base, token, countText] = process.argv.slice(2);
globalThis.WebSocket = WebSocket;
globalThis.location = { href: base };
const client = resolve(import.meta.dirname, '../../clients/js/src/realtime-client.js');
const { RealtimeClient } = await import(pathToFileURL(client).href);

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const want = Number(countText);
let seen = 0;
const rt = new RealtimeClient({ transport: 'ws', channels: ['orders'], notifications: false, token, statusIntervalMs: 60000 });
rt.on('status', ({ status }) => { if (status === 'live') out({ open: true }); });
rt.on('close', ({ code }) => out({ close: code }));
rt.on('ORDER_RECEIVED', async (ev) => {
  out({ event: ev.payload.id, cursor: rt.lastEventId });
  seen += 1;
  if (seen === want) {
    const ack = await rt.command({ op: 'ping' });
    out({ pong: ack });
    rt.stop();
    process.exit(0);
  }
});
rt.start();
setTimeout(() => { out({ timeout: seen }); process.exit(1); }, 90000);
