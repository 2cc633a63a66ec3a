// A dashboard page as the frontend team writes one: React, TanStack Query, and the package's
// provider, hooks and invalidation helper (as `npm install @rakuda/realtime` gives them). Built
// with vite by react-test.mjs. What the test reads: window.__events (payload ids in arrival
// order), window.__fetches (queryFn calls per key), window.__rt (the client: role, status).
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';
import { QueryClient, QueryClientProvider, useQuery } from '@tanstack/react-query';
import { RealtimeProvider, useNotifications, useRealtimeClient, useRealtimeEvents } from '@rakuda/realtime/react';
import { useRealtimeInvalidation } from '@rakuda/realtime/query';

window.__events = [];
window.__fetches = {};

let token = null;
async function getToken() {
  if (!token) token = (await (await fetch('/api/dev/token?sub=react-tabs&role=admin')).json()).token;
  return token;
}

// A query per data set of the design's table; its data is the gateway's connection count.
function Query({ name }) {
  const q = useQuery({
    queryKey: [name],
    queryFn: async () => {
      window.__fetches[name] = (window.__fetches[name] ?? 0) + 1;
      const r = await fetch('/api/realtime/status', { headers: { authorization: `Bearer ${await getToken()}` } });
      return (await r.json()).connections;
    },
  });
  return h('li', { 'data-query': name }, `${name}: ${q.data ?? '...'}`);
}

function App() {
  useRealtimeInvalidation();
  const { status, lastEvent } = useRealtimeEvents({ onEvent: (e) => window.__events.push(e.payload.id) });
  window.__rt = useRealtimeClient();
  const { unread } = useNotifications();
  return h(
    'main',
    null,
    h('p', { id: 'status', 'data-status': status }, status),
    h('ul', null, ['orders', 'inventory', 'pricing'].map((name) => h(Query, { key: name, name }))),
    h('p', { id: 'last' }, lastEvent?.payload.id ?? ''),
    h('p', { id: 'unread' }, `unread: ${unread}`),
  );
}

const queries = new QueryClient({
  defaultOptions: { queries: { staleTime: Infinity, refetchOnWindowFocus: false, retry: false } },
});
createRoot(document.getElementById('root')).render(
  h(
    QueryClientProvider,
    { client: queries },
    h(RealtimeProvider, { options: { token: getToken, channels: ['orders', 'inventory', 'pricing', 'listings'] } }, h(App)),
  ),
);
