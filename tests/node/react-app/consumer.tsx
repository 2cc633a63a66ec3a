// A consumer of the package's types, checked with `tsc --strict` (tests/node/tsconfig.json):
// what an app written in TypeScript against `@rakuda/realtime` compiles.
import { QueryClient } from '@tanstack/react-query';
import { NotificationCenter, RealtimeClient, type RealtimeEvent, type RealtimeStatus } from '@rakuda/realtime';
import { RealtimeProvider, useNotifications, usePresence, useRealtimeEvents, useRealtimeStatus } from '@rakuda/realtime/react';
import { DESIGN_INVALIDATIONS, invalidateOnEvents, useRealtimeInvalidation } from '@rakuda/realtime/query';

const rt = new RealtimeClient({ channels: ['orders'], token: async () => 'a-token', shared: true });
const off: () => void = rt.on('ORDER_RECEIVED', (e: RealtimeEvent, meta) => {
  const total: unknown = e.payload.data?.total;
  console.log(e.id, e.channel, total, meta.group?.count);
});
rt.on('status', ({ status }) => {
  const s: RealtimeStatus = status;
  console.log(s);
});
rt.on('resync', (r) => console.log(r.resume_from));
rt.on('presence', (p) => console.log(p.channel, p.joins, p.leaves, p.users.map((u) => `${u.user}×${u.connections}`)));
rt.on('INVENTORY_CHANGE', (e) => {
  rt.seen(e);
  void rt.ack(e, 'acknowledged').then((r) => console.log(r.new, r.ack.user, r.ack.at));
});
void rt.acks('1732330000123-0', 'inventory').then((acks) => acks.map((a) => a.kind));
void rt.presence('inventory').then((p) => console.log(p.connections, p.at));
off();
const nc = new NotificationCenter(rt);
nc.onChange(({ reason }) => console.log(reason, nc.unread, nc.items.map((n) => n.title)));
const stop = invalidateOnEvents(new QueryClient(), rt, {
  ...DESIGN_INVALIDATIONS,
  ORDER_RECEIVED: [['orders'], (e: RealtimeEvent) => ['order', e.payload.id]],
});
stop();

export function Indicator() {
  const status = useRealtimeStatus();
  const { isConnected, lastEvent } = useRealtimeEvents({ types: ['ORDER_RECEIVED'], onEvent: (e) => console.log(e.type) });
  const { unread, markAllRead } = useNotifications();
  const { users } = usePresence('inventory');
  useRealtimeInvalidation();
  return (
    <button onClick={() => void markAllRead()} data-live={isConnected}>
      {status} {unread} {lastEvent?.payload.id ?? ''} {users.length} online
    </button>
  );
}

export function Root() {
  return (
    <RealtimeProvider options={{ channels: ['orders', 'inventory'] }}>
      <Indicator />
    </RealtimeProvider>
  );
}
