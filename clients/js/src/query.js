// TanStack Query and the realtime stream (`@rakuda/realtime/query`): an event invalidates the
// queries its type maps to, and they refetch. The default map is the design's table.
//
//   const stop = invalidateOnEvents(queryClient, rt);          // any framework
//   useRealtimeInvalidation();                                 // React, inside both providers
//   useRealtimeInvalidation({ ORDER_RECEIVED: [['orders'], (e) => ['order', e.payload.id]] });
//
// A grouped burst (13 price changes at once) invalidates each key once. A RESYNC (events were
// lost) invalidates every fixed key of the map: the page's data is reloaded.
import { useEffect } from 'react';
import { useQueryClient } from '@tanstack/react-query';
import { useRealtimeClient } from './react.js';

/** Event type -> the query keys it invalidates (the Phase 27 design's table, plus listings). */
export const DESIGN_INVALIDATIONS = Object.freeze({
  INVENTORY_CHANGE: [['products'], ['inventory']],
  ORDER_RECEIVED: [['orders']],
  PRICE_CHANGE: [['listings'], ['pricing']],
  LISTING_UPDATE: [['listings']],
});

function keysOf(map, event) {
  const entries = (typeof map === 'function' ? map(event) : map[event.type]) ?? [];
  return entries.map((k) => (typeof k === 'function' ? k(event) : k)).filter(Array.isArray);
}

/** Invalidates `queryClient`'s queries on `rt`'s events; returns a function that stops it. */
export function invalidateOnEvents(queryClient, rt, map = DESIGN_INVALIDATIONS) {
  const invalidate = (keys) => {
    const seen = new Set();
    for (const queryKey of keys) {
      const id = JSON.stringify(queryKey);
      if (seen.has(id)) continue;
      seen.add(id);
      queryClient.invalidateQueries({ queryKey });
    }
  };
  const offs = [
    rt.on('*', (event, meta) => {
      if (!meta?.group) invalidate(keysOf(map, event));
    }),
    rt.on('group', (group) => {
      const events = group.payloads.map((payload) => ({ ...group, payload, payloads: undefined }));
      invalidate(events.flatMap((e) => keysOf(map, e)));
    }),
    rt.on('resync', () => {
      if (typeof map !== 'function') invalidate(Object.values(map).flat().filter(Array.isArray));
    }),
  ];
  return () => offs.forEach((off) => off());
}

/** React: {@link invalidateOnEvents} with the QueryClientProvider's client and the RealtimeProvider's. */
export function useRealtimeInvalidation(map = DESIGN_INVALIDATIONS) {
  const queryClient = useQueryClient();
  const rt = useRealtimeClient();
  useEffect(() => invalidateOnEvents(queryClient, rt, map), [queryClient, rt, map]);
}
