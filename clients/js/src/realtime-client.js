// rakuda realtime client: an ES module without dependencies, served at /realtime-client.js
// and published as the npm package `@rakuda/realtime` (clients/js: types, React bindings, a
// TanStack Query helper).
//
//   import { RealtimeClient } from '/realtime-client.js';
//   const rt = new RealtimeClient({ channels: ['orders', 'inventory'] });
//   rt.on('status', ({ status }) => ...);        // 'connecting' | 'live' | 'reconnecting' | 'disconnected'
//   rt.on('ORDER_RECEIVED', (event) => ...);     // one event type
//   rt.on('*', (event, meta) => ...);            // every event; meta.group is set for a grouped burst
//   rt.on('group', (group) => ...);              // a burst: {type, channel, count, payloads, ...}
//   rt.on('resync', ({ channel }) => reload());  // events were missed: reload your data
//   rt.start();  ...  rt.stop();
//
// Per-user notifications: `new NotificationCenter(rt)` keeps the unread count and the list
// (from the stream's first NOTIFICATION_UNREAD message, then NOTIFICATION / NOTIFICATION_READ
// events, so every device of a user agrees) and marks read through /api/notifications.
// An authenticated stream joins the user's private channel by itself; with AUTH_MODE=none
// pass `notifications: true`.
//
// `transport: 'ws'` uses one WebSocket (/api/realtime/ws) instead of EventSource, with the same
// API and guarantees (cursor, resume, groups, RESYNC), plus `rt.command({op: ...})` for the
// socket's commands (subscribe, unsubscribe, mark_read, mark_all_read, ping): a promise of
// the ack. It reconnects by itself from the last cursor: at once after close 4001 (token
// expired, with a fresh token), with backoff otherwise.
//
// With authentication, pass `token`: a string, or an async function returning a fresh one.
// EventSource cannot set headers, and a URL ends up in proxy logs: so the client trades the
// token (in a header) for a stream ticket at /api/realtime/ticket that opens a stream only
// within seconds, and puts that in `?ticket=`; a server without tickets gets
// `?access_token=`. When the server ends the stream because the token expired, the client
// asks for a fresh one and resumes from the last event.
//
// `shared: true`: one stream per browser for every tab of the origin with the same options and
// user. The tabs elect a leader with the Web Locks API (the lock is held as long as the tab
// lives); the leader holds the stream and passes every message to the others over a
// BroadcastChannel, with its cursor. When the leader's tab closes, the browser hands the lock to
// another tab, which opens the stream from the last cursor it was passed: nothing is lost, and
// nothing arrives twice. A browser allows 6 HTTP/1.1 connections per origin; with one stream per
// tab the seventh tab would hang. `rt.role` says 'leader', 'follower' or 'solo' (not shared, or
// the browser has no Web Locks or BroadcastChannel).
//
// Presence: with `presence: true` the stream gets who is connected to each of its channels,
// across every gateway, whenever that changes: `rt.on('presence', ({channel, users, joins,
// leaves}) => ...)`; `await rt.presence(channel)` asks once.
//
// Acknowledgements: `await rt.ack(event, 'acknowledged')` when a person acts on an event (every
// open dashboard of its channel gets an ACK event: "acknowledged by"), `rt.seen(event)` when it
// was shown (recorded once the page is visible, once per event); `await rt.acks(event)` lists
// them. An event is `{id, channel}`, or pass `(id, kind, channel)`.
//
// EventSource reconnects by itself and resumes with Last-Event-ID; when the browser gives up
// (the server answered an error) this client starts again with the last cursor. The
// backplane's health comes from /api/realtime/status: a stream that is open while the gateway
// cannot reach Redis is reported 'disconnected', since no live update can arrive.

const STATUSES = ['connecting', 'live', 'reconnecting', 'disconnected'];

export class RealtimeClient {
  #opts;
  #es = null;
  #ws = null;
  #pending = new Map();
  #nextCommand = 1;
  #handlers = new Map();
  #status = 'connecting';
  #streamOpen = false;
  #streamClosed = false;
  #everOpen = false;
  #backplaneUp = true;
  #lastEventId = null;
  #lastEventAt = null;
  #retryTimer = null;
  #pollTimer = null;
  #retryDelay = 1000;
  #stopped = true;
  #role = 'solo';
  #bc = null;
  #releaseLock = null;
  #joined = false;
  #seen = new Set();

  constructor(opts = {}) {
    this.#opts = {
      url: '/api/realtime/events',
      wsUrl: '/api/realtime/ws',
      transport: 'sse',
      statusUrl: '/api/realtime/status',
      statusIntervalMs: 2000,
      channels: null,
      types: null,
      ids: null,
      withCredentials: false,
      token: null,
      ticketUrl: '/api/realtime/ticket',
      notifications: null,
      shared: false,
      acksUrl: '/api/events',
      presence: false,
      presenceUrl: '/api/presence',
      ...opts,
    };
  }

  /** Subscribes `fn` to an event type, 'status', 'group', 'resync' or '*'; returns an unsubscribe function. */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.#handlers.get(type)?.delete(fn);
  }

  /** Headers for the gateway's other endpoints: the token, if there is one. */
  async headers() {
    const token = await this.#token();
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  /** Records an acknowledgement of `event` ({id, channel}, or an id and `channel`): 'seen' or 'acknowledged'. */
  async ack(event, kind = 'acknowledged', channel = event?.channel) {
    const id = typeof event === 'object' ? event.id : event;
    const u = new URL(`${this.#opts.acksUrl}/${encodeURIComponent(id)}/acks`, location.href);
    u.searchParams.set('channel', channel);
    const r = await fetch(u, {
      method: 'POST',
      credentials: this.#opts.withCredentials ? 'include' : 'same-origin',
      headers: { ...(await this.headers()), 'content-type': 'application/json' },
      body: JSON.stringify({ kind }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`ack ${id}: ${r.status} ${body.code ?? ''} ${body.message ?? ''}`);
    return body;
  }

  /** Records that `event` was shown: once the page is visible, once per event. */
  seen(event) {
    const key = `${event.channel} ${event.id}`;
    if (this.#seen.has(key)) return;
    this.#seen.add(key);
    if (this.#seen.size > 1000) this.#seen.delete(this.#seen.values().next().value);
    const send = () => this.ack(event, 'seen').catch(() => {});
    if (typeof document === 'undefined' || document.visibilityState === 'visible') return void send();
    const onVisible = () => {
      if (document.visibilityState !== 'visible') return;
      document.removeEventListener('visibilitychange', onVisible);
      send();
    };
    document.addEventListener('visibilitychange', onVisible);
  }

  /** Who is connected to `channel` now, across every gateway: {channel, users: [{user, connections}], connections}. */
  async presence(channel) {
    const u = new URL(this.#opts.presenceUrl, location.href);
    u.searchParams.set('channel', channel);
    const r = await fetch(u, { credentials: this.#opts.withCredentials ? 'include' : 'same-origin', headers: await this.headers() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`presence ${channel}: ${r.status} ${body.code ?? ''} ${body.message ?? ''}`);
    return body;
  }

  /** The acknowledgements of `event`: [{user, kind, role?, at}], oldest first. */
  async acks(event, channel = event?.channel) {
    const id = typeof event === 'object' ? event.id : event;
    const u = new URL(`${this.#opts.acksUrl}/${encodeURIComponent(id)}/acks`, location.href);
    u.searchParams.set('channel', channel);
    const r = await fetch(u, { credentials: this.#opts.withCredentials ? 'include' : 'same-origin', headers: await this.headers() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`acks ${id}: ${r.status} ${body.code ?? ''} ${body.message ?? ''}`);
    return body.acks;
  }

  get transport() { return this.#opts.transport; }
  get status() { return this.#status; }
  get lastEventAt() { return this.#lastEventAt; }
  get lastEventId() { return this.#lastEventId; }
  /** 'leader' (holds the shared stream), 'follower' (gets it from the leader) or 'solo'. */
  get role() { return this.#role; }
  /** Whether `command()` can be sent now (WebSocket mode, this tab's socket open). */
  get canCommand() { return this.#ws?.readyState === 1; }

  start() {
    if (!this.#stopped) return this;
    this.#stopped = false;
    const canShare = typeof BroadcastChannel !== 'undefined' && typeof navigator !== 'undefined' && navigator.locks;
    if (this.#opts.shared && canShare) {
      this.#startShared();
    } else {
      this.#connect();
      this.#poll();
    }
    return this;
  }

  // The tabs sharing one stream: same gateway, options and user.
  async #sharedKey() {
    let user = '';
    try {
      const token = await this.#token();
      // Only to keep users apart (the gateway verifies tokens): the JWT's `sub`, unverified.
      const claims = token && JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
      user = claims?.sub ?? '';
    } catch {
      // Not a JWT: one group for every tab without a user.
    }
    const o = this.#opts;
    const what = [new URL(o.transport === 'ws' ? o.wsUrl : o.url, location.href).href, o.transport,
      o.channels, o.types, o.ids, o.notifications, user];
    return `rakuda-realtime:${JSON.stringify(what)}`;
  }

  async #startShared() {
    const key = await this.#sharedKey();
    if (this.#stopped) return;
    this.#role = 'follower';
    this.#bc = new BroadcastChannel(key);
    this.#bc.onmessage = (e) => this.#fromShared(e.data);
    this.#bc.postMessage({ kind: 'hello' });
    navigator.locks.request(key, () => new Promise((release) => {
      if (this.#stopped) {
        release();
        return;
      }
      this.#releaseLock = release;
      this.#lead();
    })).catch(() => {});
  }

  // This tab got the lock: it opens the stream, from the last cursor a leader passed it.
  #lead() {
    this.#role = 'leader';
    if (this.#joined) this.#setStatus('reconnecting', 'taking over the shared stream');
    this.#connect();
    this.#poll();
    this.#bc.postMessage({ kind: 'state', status: this.#status, cursor: this.#lastEventId });
  }

  #share(message) {
    if (this.#role === 'leader') this.#bc?.postMessage(message);
  }

  #fromShared(m) {
    if (this.#stopped || !m) return;
    if (this.#role === 'leader') {
      if (m.kind === 'hello') this.#share({ kind: 'state', status: this.#status, cursor: this.#lastEventId });
      return;
    }
    if (m.kind === 'state' || m.kind === 'status') {
      if (m.cursor) this.#lastEventId = m.cursor;
      this.#setStatus(m.status, m.detail ?? 'shared stream');
      if (m.kind === 'state' && !this.#joined) {
        // What this tab missed before it joined (the unread snapshot went out at the stream's
        // open): listeners read it again.
        this.#joined = true;
        this.#emit('shared-join', { cursor: this.#lastEventId });
      }
    } else if (m.kind === 'data') {
      this.#handle(m.data, m.cursor);
    }
  }

  stop() {
    this.#stopped = true;
    this.#bc?.close();
    this.#bc = null;
    this.#releaseLock?.();
    this.#releaseLock = null;
    this.#role = 'solo';
    this.#joined = false;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#pollTimer);
    this.#es?.close();
    this.#es = null;
    this.#ws?.close(1000, 'stopped');
    this.#ws = null;
    this.#streamOpen = false;
    this.#setStatus('disconnected', 'stopped');
  }

  #emit(type, ...args) {
    for (const fn of this.#handlers.get(type) || []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`realtime handler for ${type} failed`, e);
      }
    }
  }

  #setStatus(status, detail = '') {
    const next = STATUSES.includes(status) ? status : 'disconnected';
    if (next === this.#status) return;
    this.#status = next;
    this.#share({ kind: 'status', status: next, detail });
    this.#emit('status', { status: next, detail, at: new Date() });
  }

  // red: no live update can arrive (the backplane is down, or the stream was given up and is
  // being started again); amber: the stream is reconnecting; green: open, backplane up.
  #refresh() {
    // A follower's status is the leader's.
    if (this.#stopped || this.#role === 'follower') return;
    if (!this.#backplaneUp) this.#setStatus('disconnected', 'backplane unreachable');
    else if (this.#streamOpen) this.#setStatus('live');
    else if (this.#streamClosed) this.#setStatus('disconnected', 'stream closed');
    else if (this.#everOpen) this.#setStatus('reconnecting', 'stream interrupted');
    else this.#setStatus('connecting');
  }

  async #token() {
    const t = this.#opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  // The stream URL's credential: a ticket for the token, or the token where tickets are off.
  async #credential(token, streamUrl) {
    if (this.#opts.ticketUrl) {
      // On the stream's server, wherever the page is.
      const r = await fetch(new URL(this.#opts.ticketUrl, streamUrl), {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{}',
      }).catch(() => null);
      if (r?.ok) return ['ticket', (await r.json()).ticket];
      if (r && r.status !== 404) throw new Error(`ticket: ${r.status}`);
    }
    return ['access_token', token];
  }

  async #url(path = this.#opts.url) {
    const u = new URL(path, location.href);
    const token = await this.#token();
    if (token) u.searchParams.set(...(await this.#credential(token, u)));
    for (const k of ['channels', 'types', 'ids']) {
      const v = this.#opts[k];
      if (v && v.length) u.searchParams.set(k, [].concat(v).join(','));
    }
    if (this.#opts.notifications !== null) u.searchParams.set('notifications', String(this.#opts.notifications));
    if (this.#opts.presence) u.searchParams.set('presence', 'true');
    // A fresh EventSource has no Last-Event-ID header: pass the cursor in the query instead.
    if (this.#lastEventId) u.searchParams.set('last_event_id', this.#lastEventId);
    return u.toString();
  }

  /** WebSocket mode: sends a command; resolves with its ack (or pong), rejects with its error. */
  command(cmd) {
    if (!this.#ws || this.#ws.readyState !== 1) return Promise.reject(new Error('the socket is not open'));
    const id = this.#nextCommand++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ ...cmd, id }));
    });
  }

  // A stream or socket is open: live, and the next retry starts from the shortest delay.
  #opened() {
    this.#streamOpen = true;
    this.#everOpen = true;
    this.#streamClosed = false;
    this.#retryDelay = 1000;
    this.#refresh();
  }

  // Starts again from the last cursor after the current delay, and doubles it (up to 15 s).
  #retry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), this.#retryDelay);
    this.#retryDelay = Math.min(this.#retryDelay * 2, 15000);
  }

  async #connectWs() {
    let url;
    try {
      url = new URL(await this.#url(this.#opts.wsUrl));
    } catch {
      this.#streamClosed = true;
      this.#refresh();
      this.#retry();
      return;
    }
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url.toString());
    this.#ws = ws;
    ws.onopen = () => this.#opened();
    ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m.op === 'message') {
        this.#handle(m.data, m.cursor);
        return;
      }
      const p = this.#pending.get(m.id);
      if (!p) {
        if (m.op === 'error') this.#emit('error', m);
        return;
      }
      this.#pending.delete(m.id);
      if (m.op === 'error') p.reject(Object.assign(new Error(m.message), { code: m.code }));
      else p.resolve(m);
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#streamOpen = false;
      for (const p of this.#pending.values()) p.reject(new Error(`socket closed (${e.code})`));
      this.#pending.clear();
      this.#emit('close', { code: e.code, reason: e.reason });
      if (this.#stopped) return;
      if (e.code === 4001) {
        // The token expired: at once, with a fresh one, from the last cursor.
        this.#connect();
      } else {
        this.#streamClosed = e.code === 4003;
        this.#retry();
      }
      this.#refresh();
    };
  }

  async #connect() {
    if (this.#stopped) return;
    if (this.#opts.transport === 'ws') return this.#connectWs();
    let url;
    try {
      url = await this.#url();
    } catch (e) {
      this.#streamClosed = true;
      this.#refresh();
      this.#retryTimer = setTimeout(() => this.#connect(), this.#retryDelay);
      return;
    }
    const es = new EventSource(url, { withCredentials: this.#opts.withCredentials });
    this.#es = es;
    es.onopen = () => this.#opened();
    es.onerror = () => {
      this.#streamOpen = false;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered an error): start again with the cursor.
        this.#streamClosed = true;
        es.close();
        this.#retry();
      }
      this.#refresh();
    };
    es.onmessage = (m) => this.#message(m);
    es.addEventListener('RESYNC', (m) => this.#message(m));
    es.addEventListener('TOKEN_EXPIRED', (m) => this.#message(m));
  }

  #message(m) {
    let data;
    try {
      data = JSON.parse(m.data);
    } catch {
      return;
    }
    this.#handle(data, m.lastEventId);
  }

  #handle(data, cursor) {
    this.#share({ kind: 'data', data, cursor });
    if (cursor) this.#lastEventId = cursor;
    this.#lastEventAt = new Date();
    if (data.type === 'RESYNC') {
      this.#emit('resync', data);
      return;
    }
    if (data.type === 'NOTIFICATION_UNREAD') {
      // Not an event: the user's unread notifications as the stream opens.
      this.#emit('NOTIFICATION_UNREAD', data);
      return;
    }
    if (data.type === 'PRESENCE') {
      // Not an event: who is connected to a channel now (`presence: true`).
      this.#emit('presence', data);
      return;
    }
    if (data.type === 'TOKEN_EXPIRED') {
      // Start again at once with a fresh token, from the last event (a socket is closed by
      // the server with 4001, which does the same).
      this.#emit('token-expired', data);
      if (this.#ws || this.#role === 'follower') return;
      this.#es?.close();
      this.#streamOpen = false;
      clearTimeout(this.#retryTimer);
      this.#connect();
      return;
    }
    if (Array.isArray(data.payloads)) {
      this.#emit('group', data);
      for (const payload of data.payloads) {
        const event = { id: data.id, type: data.type, channel: data.channel, payload, timestamp: data.timestamp };
        this.#emit(data.type, event, { group: data });
        this.#emit('*', event, { group: data });
      }
      return;
    }
    this.#emit(data.type, data, { group: null });
    this.#emit('*', data, { group: null });
  }

  async #poll() {
    if (this.#stopped) return;
    try {
      const token = await this.#token();
      const r = await fetch(this.#opts.statusUrl, {
        credentials: this.#opts.withCredentials ? 'include' : 'same-origin',
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
      if (r.ok) {
        const s = await r.json();
        this.#backplaneUp = s.connected !== false;
        this.#emit('backplane', s);
      }
    } catch {
      // The gateway itself is unreachable: the stream reports that.
    }
    this.#refresh();
    this.#pollTimer = setTimeout(() => this.#poll(), this.#opts.statusIntervalMs);
  }
}

// The user's notifications as every device of theirs sees them.
//
//   const nc = new NotificationCenter(rt);
//   nc.onChange(({ reason, notification }) => render(nc.unread, nc.items));  // reason: 'snapshot' | 'new' | 'read' | 'reload'
//   await nc.markRead(id);  await nc.markAllRead();
export class NotificationCenter {
  #rt;
  #url;
  #items = new Map();
  #unread = 0;
  #handlers = new Set();

  constructor(rt, { url = '/api/notifications' } = {}) {
    this.#rt = rt;
    this.#url = url;
    rt.on('NOTIFICATION_UNREAD', (s) => {
      // What the device knew of read ones stays; the unread ones are exactly these.
      for (const n of this.#items.values()) n.read = true;
      for (const n of s.notifications) this.#items.set(n.id, n);
      this.#unread = s.unread;
      this.#changed('snapshot');
    });
    rt.on('NOTIFICATION', (ev) => {
      const d = ev.payload?.data || {};
      if (!d.notification) return;
      this.#items.set(d.notification.id, d.notification);
      if (typeof d.unread === 'number') this.#unread = d.unread;
      this.#changed('new', d.notification);
    });
    rt.on('NOTIFICATION_READ', (ev) => {
      const d = ev.payload?.data || {};
      for (const n of this.#items.values()) if (d.all || d.ids?.includes(n.id)) n.read = true;
      if (typeof d.unread === 'number') this.#unread = d.unread;
      this.#changed('read');
    });
    // Events of the private channel were lost (older than retention): ask again. So does a tab
    // that joined a shared stream after its snapshot.
    rt.on('resync', () => this.reload());
    rt.on('shared-join', () => this.reload().catch(() => {}));
  }

  /** The unread count. */
  get unread() { return this.#unread; }

  /** Known notifications, newest first. */
  get items() {
    return [...this.#items.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  }

  /** Calls `fn({reason, notification?})` on every change; returns an unsubscribe function. */
  onChange(fn) {
    this.#handlers.add(fn);
    return () => this.#handlers.delete(fn);
  }

  #changed(reason, notification) {
    for (const fn of this.#handlers) {
      try {
        fn({ reason, notification });
      } catch (e) {
        console.error('notification handler failed', e);
      }
    }
  }

  async #call(method, path, search = '') {
    const init = { method, headers: await this.#rt.headers(), credentials: 'same-origin' };
    if (method !== 'GET') {
      // JSON, always: the server refuses a cookie-authenticated change sent any other way (CSRF).
      init.headers['content-type'] = 'application/json';
      init.body = '{}';
    }
    const r = await fetch(`${this.#url}${path}${search}`, init);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${method} ${this.#url}${path}: ${r.status} ${body.code ?? ''} ${body.message ?? ''}`);
    return body;
  }

  /** Reads the newest 50 again from the server. */
  async reload() {
    const page = await this.#call('GET', '', '?limit=50');
    this.#items = new Map(page.notifications.map((n) => [n.id, n]));
    this.#unread = page.unread;
    this.#changed('reload');
  }

  /** Marks one read; every device of the user clears it (NOTIFICATION_READ). */
  async markRead(id) {
    const r = this.#rt.canCommand
      ? await this.#rt.command({ op: 'mark_read', notification_id: id })
      : await this.#call('POST', `/${encodeURIComponent(id)}/read`);
    const n = this.#items.get(id);
    if (n) n.read = true;
    this.#unread = r.unread;
    this.#changed('read');
  }

  /** Marks every one read. */
  async markAllRead() {
    const r = this.#rt.canCommand
      ? await this.#rt.command({ op: 'mark_all_read' })
      : await this.#call('POST', '/read-all');
    for (const n of this.#items.values()) n.read = true;
    this.#unread = r.unread;
    this.#changed('read');
  }
}
