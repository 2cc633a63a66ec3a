// Types of `@rakuda/realtime/react` (src/react.js).
import type { ReactNode, ReactElement } from 'react';
import type { EventMeta, Notification, RealtimeClient, RealtimeEvent, RealtimeOptions, RealtimeStatus } from './index.js';

export interface RealtimeProviderProps {
  /** A client of your own (started, never stopped, by the provider). */
  client?: RealtimeClient;
  /** Options of the client the provider makes (`shared` defaults to true here). */
  options?: RealtimeOptions & { notificationsUrl?: string };
  children?: ReactNode;
}

export function RealtimeProvider(props: RealtimeProviderProps): ReactElement;
export function useRealtimeClient(): RealtimeClient;
export function useRealtimeStatus(): RealtimeStatus;

export interface UseRealtimeEventsOptions {
  channels?: string[];
  types?: string[];
  onEvent?: (event: RealtimeEvent, meta: EventMeta) => void;
}

export function useRealtimeEvents(options?: UseRealtimeEventsOptions): {
  status: RealtimeStatus;
  isConnected: boolean;
  lastEvent: RealtimeEvent | null;
};

export function useNotifications(): {
  unread: number;
  items: Notification[];
  markRead(id: string): Promise<void>;
  markAllRead(): Promise<void>;
  reload(): Promise<void>;
};

/** Who is connected to `channel` now, across every gateway (the provider's options need
 *  `presence: true` for live changes). */
export function usePresence(channel: string): {
  users: { user: string; connections: number }[];
  connections: number;
};
