// React bindings of the realtime client (`@rakuda/realtime/react`). No JSX, no build step.
//
//   <RealtimeProvider options={{ token, channels: ['orders', 'inventory'] }}>  ...  </RealtimeProvider>
//   const { status, isConnected, lastEvent } = useRealtimeEvents({ types: ['ORDER_RECEIVED'], onEvent });
//   const status = useRealtimeStatus();
//   const { unread, items, markRead, markAllRead } = useNotifications();
//   const { users, connections } = usePresence('inventory');  // the provider's options: presence: true
//
// The provider owns one client (shared by the tabs of the browser unless `options.shared` is
// false) and starts it while mounted; or pass your own `client`, which it starts and leaves
// running. The hooks filter the provider's stream by channel and type in the page; the server
// sends what the provider's options subscribe to.
import { createContext, createElement, useContext, useEffect, useReducer, useRef, useState, useSyncExternalStore } from 'react';
import { NotificationCenter, RealtimeClient } from './realtime-client.js';

const Context = createContext(null);

export function RealtimeProvider({ client, options, children }) {
  const [value] = useState(() => {
    const rt = client ?? new RealtimeClient({ shared: true, ...options });
    const url = options?.notificationsUrl;
    return { rt, owned: !client, notifications: new NotificationCenter(rt, url ? { url } : undefined) };
  });
  useEffect(() => {
    value.rt.start();
    return () => {
      if (value.owned) value.rt.stop();
    };
  }, [value]);
  return createElement(Context.Provider, { value }, children);
}

function useRealtime() {
  const value = useContext(Context);
  if (!value) throw new Error('a realtime hook needs a <RealtimeProvider> above it');
  return value;
}

/** The provider's client. */
export function useRealtimeClient() {
  return useRealtime().rt;
}

/** 'connecting' | 'live' | 'reconnecting' | 'disconnected', re-rendered on change. */
export function useRealtimeStatus() {
  const { rt } = useRealtime();
  return useSyncExternalStore(
    (changed) => rt.on('status', changed),
    () => rt.status,
    () => 'connecting',
  );
}

/** Calls `onEvent(event, meta)` for each event of `channels` and `types` (default all). */
export function useRealtimeEvents({ channels, types, onEvent } = {}) {
  const { rt } = useRealtime();
  const handler = useRef(onEvent);
  useEffect(() => {
    handler.current = onEvent;
  });
  const [lastEvent, setLastEvent] = useState(null);
  const filter = JSON.stringify([channels ?? null, types ?? null]);
  useEffect(() => {
    const [ch, ty] = JSON.parse(filter).map((list) => list && new Set(list));
    return rt.on('*', (event, meta) => {
      if ((ch && !ch.has(event.channel)) || (ty && !ty.has(event.type))) return;
      setLastEvent(event);
      handler.current?.(event, meta);
    });
  }, [rt, filter]);
  const status = useRealtimeStatus();
  return { status, isConnected: status === 'live', lastEvent };
}

/** The user's notifications: the unread count, the list (newest first), and marking read. */
export function useNotifications() {
  const { notifications } = useRealtime();
  const [, changed] = useReducer((n) => n + 1, 0);
  useEffect(() => notifications.onChange(changed), [notifications]);
  return {
    unread: notifications.unread,
    items: notifications.items,
    markRead: (id) => notifications.markRead(id),
    markAllRead: () => notifications.markAllRead(),
    reload: () => notifications.reload(),
  };
}

/** Who is connected to `channel` now, across every gateway: `{users: [{user, connections}],
 *  connections}`, asked once, then kept by the stream's PRESENCE messages (the provider's
 *  options need `presence: true`). */
export function usePresence(channel) {
  const { rt } = useRealtime();
  const [state, setState] = useState({ users: [], connections: 0 });
  useEffect(() => {
    let live = true;
    rt.presence(channel)
      .then((p) => live && setState({ users: p.users, connections: p.connections }))
      .catch(() => {});
    const off = rt.on('presence', (m) => {
      if (m.channel === channel) setState({ users: m.users, connections: m.connections });
    });
    return () => {
      live = false;
      off();
    };
  }, [rt, channel]);
  return state;
}
