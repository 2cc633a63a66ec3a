// Types of `@rakuda/realtime/query` (src/query.js).
import type { QueryClient, QueryKey } from '@tanstack/react-query';
import type { RealtimeClient, RealtimeEvent } from './index.js';

/** A key, or a key made from the event (`(e) => ['order', e.payload.id]`). */
export type KeyOf = QueryKey | ((event: RealtimeEvent) => QueryKey);

/** Event type -> keys, or a function of the event. */
export type InvalidationMap = Readonly<Record<string, readonly KeyOf[]>> | ((event: RealtimeEvent) => readonly KeyOf[]);

/** The design's table: INVENTORY_CHANGE -> products, inventory; ORDER_RECEIVED -> orders; PRICE_CHANGE -> listings, pricing; LISTING_UPDATE -> listings. */
export const DESIGN_INVALIDATIONS: Readonly<Record<string, readonly QueryKey[]>>;

export function invalidateOnEvents(queryClient: QueryClient, rt: RealtimeClient, map?: InvalidationMap): () => void;
export function useRealtimeInvalidation(map?: InvalidationMap): void;
