// rakuda realtime client: an ES module without dependencies, served at /realtime-client.js.
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
// With authentication, pass `token`: a string, or an async function returning a fresh one.
// It goes in `?access_token=` (EventSource cannot set headers); when the server ends the
// stream because the token expired, the client asks for a fresh one and resumes from the
// last event.
//
// EventSource reconnects by itself and resumes with Last-Event-ID; when the browser gives up
// (the server answered an error) this client starts again with the last cursor. The
// backplane's health comes from /api/realtime/status: a stream that is open while the gateway
// cannot reach Redis is reported 'disconnected', since no live update can arrive.

const STATUSES = ['connecting', 'live', 'reconnecting', 'disconnected'];

export class RealtimeClient {
  #opts;
  #es = null;
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

  constructor(opts = {}) {
    this.#opts = {
      url: '/api/realtime/events',
      statusUrl: '/api/realtime/status',
      statusIntervalMs: 2000,
      channels: null,
      types: null,
      ids: null,
      withCredentials: false,
      token: null,
      ...opts,
    };
  }

  /** Subscribes `fn` to an event type, 'status', 'group', 'resync' or '*'; returns an unsubscribe function. */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.#handlers.get(type)?.delete(fn);
  }

  get status() { return this.#status; }
  get lastEventAt() { return this.#lastEventAt; }
  get lastEventId() { return this.#lastEventId; }

  start() {
    if (!this.#stopped) return this;
    this.#stopped = false;
    this.#connect();
    this.#poll();
    return this;
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#pollTimer);
    this.#es?.close();
    this.#es = null;
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
    this.#emit('status', { status: next, detail, at: new Date() });
  }

  // red: no live update can arrive (the backplane is down, or the stream was given up and is
  // being started again); amber: the stream is reconnecting; green: open, backplane up.
  #refresh() {
    if (this.#stopped) return;
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

  async #url() {
    const u = new URL(this.#opts.url, location.href);
    const token = await this.#token();
    if (token) u.searchParams.set('access_token', token);
    for (const k of ['channels', 'types', 'ids']) {
      const v = this.#opts[k];
      if (v && v.length) u.searchParams.set(k, [].concat(v).join(','));
    }
    // A fresh EventSource has no Last-Event-ID header: pass the cursor in the query instead.
    if (this.#lastEventId) u.searchParams.set('last_event_id', this.#lastEventId);
    return u.toString();
  }

  async #connect() {
    if (this.#stopped) return;
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
    es.onopen = () => {
      this.#streamOpen = true;
      this.#everOpen = true;
      this.#streamClosed = false;
      this.#retryDelay = 1000;
      this.#refresh();
    };
    es.onerror = () => {
      this.#streamOpen = false;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered an error): start again with the cursor.
        this.#streamClosed = true;
        es.close();
        clearTimeout(this.#retryTimer);
        this.#retryTimer = setTimeout(() => this.#connect(), this.#retryDelay);
        this.#retryDelay = Math.min(this.#retryDelay * 2, 15000);
      }
      this.#refresh();
    };
    es.onmessage = (m) => this.#message(m);
    es.addEventListener('RESYNC', (m) => this.#message(m));
    es.addEventListener('TOKEN_EXPIRED', (m) => this.#message(m));
  }

  #message(m) {
    if (m.lastEventId) this.#lastEventId = m.lastEventId;
    let data;
    try {
      data = JSON.parse(m.data);
    } catch {
      return;
    }
    this.#lastEventAt = new Date();
    if (data.type === 'RESYNC') {
      this.#emit('resync', data);
      return;
    }
    if (data.type === 'TOKEN_EXPIRED') {
      // Start again at once with a fresh token, from the last event.
      this.#emit('token-expired', data);
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
