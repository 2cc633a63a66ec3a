// Types of `@rakuda/realtime` (src/realtime-client.js). The wire formats are
// proto-schemas/envelope.schema.json, sse-group.schema.json, sse-resync.schema.json,
// sse-notification-unread.schema.json and notification.schema.json.

/** The connection indicator: green, amber, red (and the first connect). */
export type RealtimeStatus = 'connecting' | 'live' | 'reconnecting' | 'disconnected';

/** What happened to the entity. */
export type Action = 'created' | 'updated' | 'deleted';

/** An event's payload: the entity, what happened, the few fields a toast needs. */
export interface Payload<D = Record<string, unknown>> {
  id: string;
  action: Action;
  data?: D;
}

/** One event, as every channel carries it. */
export interface RealtimeEvent<T extends string = string, D = Record<string, unknown>> {
  /** The store's id (`<ms>-<seq>`), growing within a channel. */
  id: string;
  type: T;
  channel: string;
  payload: Payload<D>;
  /** RFC 3339, milliseconds. */
  timestamp: string;
}

/** A burst of one type on one channel, delivered as one message. */
export interface RealtimeGroup<T extends string = string> {
  id: string;
  type: T;
  channel: string;
  count: number;
  payloads: Payload[];
  timestamp: string;
}

/** Events after the cursor are gone: reload the page's data. */
export interface Resync {
  type: 'RESYNC';
  channel: string;
  resume_from: string;
}

/** What an acknowledgement says: shown on a visible page, or acted on (implies seen). */
export type AckKind = 'seen' | 'acknowledged';

/** One user's acknowledgement of an event (GET /api/events/{id}/acks). */
export interface Ack {
  user: string;
  kind: AckKind;
  role?: string;
  /** Unix ms of its first record. */
  at: number;
}

/** Who is connected to a channel now (GET /api/presence, the PRESENCE message). */
export interface PresenceRoster {
  channel: string;
  users: { user: string; connections: number }[];
  connections: number;
}

/** The PRESENCE message: the roster, and who joined and left since the last one. */
export interface PresenceMessage extends PresenceRoster {
  type: 'PRESENCE';
  joins: string[];
  leaves: string[];
  timestamp: string;
}

/** A per-user notification. */
export interface Notification {
  id: string;
  user_id: string;
  type: 'info' | 'warning' | 'error' | 'success';
  title: string;
  message: string;
  created_at: string;
  read: boolean;
}

/** The stream's first message for a user: their unread notifications. */
export interface NotificationUnread {
  type: 'NOTIFICATION_UNREAD';
  channel: string;
  user_id: string;
  unread: number;
  notifications: Notification[];
  timestamp: string;
}

/** Passed with each event: the group it came in, or null. */
export interface EventMeta {
  group: RealtimeGroup | null;
}

/** A status change. */
export interface StatusChange {
  status: RealtimeStatus;
  detail: string;
  at: Date;
}

/** The WebSocket's commands (proto-schemas/ws-client.schema.json), without `id`. */
export type Command =
  | { op: 'subscribe'; channels?: string[]; types?: string[]; ids?: string[]; notifications?: boolean; cursor?: string }
  | { op: 'unsubscribe'; channels: string[] }
  | { op: 'mark_read'; notification_id: string }
  | { op: 'mark_all_read' }
  | { op: 'ping' };

/** The client's options; every one is optional. */
export interface RealtimeOptions {
  /** The SSE endpoint (default `/api/realtime/events`), relative to the page. */
  url?: string;
  /** The WebSocket endpoint (default `/api/realtime/ws`). */
  wsUrl?: string;
  /** `sse` (default) or `ws`. */
  transport?: 'sse' | 'ws';
  /** Polled for the backplane's health (default `/api/realtime/status`). */
  statusUrl?: string;
  statusIntervalMs?: number;
  /** Channels to subscribe to (default every channel the token grants). */
  channels?: string[] | null;
  types?: string[] | null;
  /** Only events about these entities (`payload.id`). */
  ids?: string[] | null;
  withCredentials?: boolean;
  /** The token, or a function returning a fresh one. */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** Where stream tickets come from (default `/api/realtime/ticket`; null: never). */
  ticketUrl?: string | null;
  /** Where acknowledgements are recorded and listed (default `/api/events`). */
  acksUrl?: string;
  /** PRESENCE messages of the stream's channels (`presence=1`); default false. */
  presence?: boolean;
  /** Where presence is asked (default `/api/presence`). */
  presenceUrl?: string;
  /** Join the user's private notification channel (default: the server decides). */
  notifications?: boolean | null;
  /** One stream per browser for all tabs of the origin (Web Locks + BroadcastChannel). */
  shared?: boolean;
}

/** The handlers `on` takes, by name. */
export interface RealtimeHandlers {
  status: (change: StatusChange) => void;
  group: (group: RealtimeGroup) => void;
  resync: (resync: Resync) => void;
  NOTIFICATION_UNREAD: (snapshot: NotificationUnread) => void;
  presence: (message: PresenceMessage) => void;
  'token-expired': (message: { type: 'TOKEN_EXPIRED'; message: string }) => void;
  'shared-join': (info: { cursor: string | null }) => void;
  backplane: (status: { connected: boolean; redis: string; instance: string; connections: number }) => void;
  close: (info: { code: number; reason: string }) => void;
  error: (error: { op: 'error'; code: string; message: string }) => void;
  '*': (event: RealtimeEvent, meta: EventMeta) => void;
}

/** A resumable stream of events, with a status. */
export class RealtimeClient {
  constructor(options?: RealtimeOptions);
  /** Subscribes to a named stream happening or an event type; returns the unsubscribe function. */
  on<K extends keyof RealtimeHandlers>(type: K, fn: RealtimeHandlers[K]): () => void;
  on(type: string, fn: (event: RealtimeEvent, meta: EventMeta) => void): () => void;
  /** The token as headers for the gateway's other endpoints. */
  headers(): Promise<Record<string, string>>;
  readonly transport: 'sse' | 'ws';
  readonly status: RealtimeStatus;
  readonly lastEventAt: Date | null;
  /** The last cursor: resume from it. */
  readonly lastEventId: string | null;
  readonly role: 'leader' | 'follower' | 'solo';
  readonly canCommand: boolean;
  start(): this;
  stop(): void;
  /** Records an acknowledgement of an event (`{id, channel}`, or an id and `channel`). */
  ack(
    event: Pick<RealtimeEvent, 'id' | 'channel'> | string,
    kind?: AckKind,
    channel?: string,
  ): Promise<{ channel: string; id: string; ack: Ack; new: boolean }>;
  /** Records that an event was shown, once the page is visible, once per event. */
  seen(event: Pick<RealtimeEvent, 'id' | 'channel'>): void;
  /** Who is connected to `channel` now, across every gateway. */
  presence(channel: string): Promise<PresenceRoster & { at: number }>;
  /** The acknowledgements of an event, oldest first. */
  acks(event: Pick<RealtimeEvent, 'id' | 'channel'> | string, channel?: string): Promise<Ack[]>;
  /** WebSocket mode: a command; resolves with its ack. */
  command(cmd: Command): Promise<{ op: 'ack' | 'pong'; id: number; [k: string]: unknown }>;
}

/** What changed in a {@link NotificationCenter}. */
export interface NotificationChange {
  reason: 'snapshot' | 'new' | 'read' | 'reload';
  notification?: Notification;
}

/** The user's notifications as every device of theirs sees them. */
export class NotificationCenter {
  constructor(rt: RealtimeClient, options?: { url?: string });
  readonly unread: number;
  /** Newest first. */
  readonly items: Notification[];
  onChange(fn: (change: NotificationChange) => void): () => void;
  reload(): Promise<void>;
  markRead(id: string): Promise<void>;
  markAllRead(): Promise<void>;
}
