// The operations dashboard: connection indicator, toasts, live feed, today's numbers.
// Served compiled into the gateway; uses only the client module next to it.
import { RealtimeClient, NotificationCenter } from '/realtime-client.js';

const $ = (id) => document.getElementById(id);
const FEED_MAX = 100;
const TOAST_MS = 5000;
const GROUP_WINDOW_MS = 1500;
const TYPES = ['ORDER_RECEIVED', 'INVENTORY_CHANGE', 'PRICE_CHANGE', 'LISTING_UPDATE'];
const counts = Object.fromEntries(TYPES.map((t) => [t, 0]));
let hours = new Array(24).fill(0);
const fmtTime = (d) => d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const money = (v, c) => (typeof v === 'number' ? `${v.toFixed(2)}${c ? ' ' + c : ''}` : '–');

// ---- connection indicator ------------------------------------------------------------------
// A token from /api/dev/token when the gateway hands them out (AUTH_MODE=dev, `make run`);
// otherwise none here: the `rakuda_token` cookie your login sets (jwt), or nothing (none).
// What this process serves besides the API (the page says: `dev-tokens`, `dev-sinks`): the
// dashboard asks for nothing else, so no request of it fails.
const offers = new Set((document.querySelector('meta[name="rakuda-offers"]')?.content ?? '').split(' ').filter(Boolean));
let devToken = null;
async function token() {
  if (!offers.has('dev-tokens')) return null;
  if (devToken && devToken.expiresAt - Date.now() / 1000 > 60) return devToken.token;
  try {
    const r = await fetch('/api/dev/token');
    if (!r.ok) return null;
    const t = await r.json();
    devToken = { token: t.token, expiresAt: t.expires_at };
    return t.token;
  } catch {
    return null;
  }
}
// The user's private channel too (joined by itself with a token; asked for without one).
// `shared`: one stream per browser for all of its dashboard tabs (the leader tab holds it, the
// others get it over a BroadcastChannel): HTTP/1.1 allows 6 connections per host, so with a
// stream per tab the 7th tab would never load.
// `presence`: who else is on a dashboard now, across every gateway ("3 operators online").
const rt = new RealtimeClient({ notifications: true, token, shared: true, presence: true });
let lastUpdate = null;
function showStatus(status) {
  $('conn').dataset.status = status;
  $('conn-label').textContent = status;
}
function showLast() {
  $('conn-last').textContent = lastUpdate ? `last update ${fmtTime(lastUpdate)}` : 'no update yet';
}
rt.on('status', ({ status }) => showStatus(status));
rt.on('backplane', (s) => {
  if (typeof s.connections === 'number') {
    // This instance's; the cluster figure comes from /api/realtime/stats.
  }
});

// ---- what an event says, for the feed and the toasts ---------------------------------------
function describe(ev) {
  const d = ev.payload?.data || {};
  const id = ev.payload?.id ?? '';
  switch (ev.type) {
    case 'ORDER_RECEIVED':
      return { kind: 'order', text: `New order ${id}`, detail: `${d.marketplace ?? ''} · ${money(d.total, d.currency)}` };
    case 'INVENTORY_CHANGE':
      if (d.isAvailable === false) return { kind: 'stockout', text: `Out of stock: ${id}`, detail: d.source ?? '' };
      if (d.isAvailable === true && d.wasAvailable === false) return { kind: null, text: `Back in stock: ${id}`, detail: '' };
      return { kind: null, text: `Stock ${id}`, detail: d.priceChanged ? `price ${money(d.previousPrice)} → ${money(d.price, d.currency)}` : '' };
    case 'PRICE_CHANGE':
      return { kind: 'price', text: `Price ${id}`, detail: `${money(d.oldPrice)} → ${money(d.newPrice, d.currency)}` };
    case 'LISTING_UPDATE':
      return { kind: null, text: `Listing ${id}`, detail: `${d.previousStatus ?? '–'} → ${d.status ?? '?'}` };
    default:
      return { kind: null, text: `${ev.type} ${id}`, detail: '' };
  }
}
const KIND = {
  order: { cls: 'orders', one: 'new order', many: 'new orders' },
  stockout: { cls: 'inventory', one: 'stock-out', many: 'stock-outs' },
  price: { cls: 'pricing', one: 'price change', many: 'price changes' },
  notify: { cls: 'notify', one: 'notification', many: 'notifications' },
};
const PRIVATE_TYPES = new Set(['NOTIFICATION', 'NOTIFICATION_READ']);

// ---- toasts: never focused, never in the way, grouped in bursts ----------------------------
const open = new Map(); // kind -> {el, count, timer, since}
function toast(kind, text, detail, n = 1) {
  const k = KIND[kind];
  const now = Date.now();
  const cur = open.get(kind);
  if (cur && now - cur.since < GROUP_WINDOW_MS + TOAST_MS) {
    cur.count += n;
    cur.el.innerHTML = '';
    const b = document.createElement('b');
    b.textContent = `${cur.count} ${k.many}`;
    const s = document.createElement('span');
    s.textContent = `latest: ${text}`;
    cur.el.append(b, s);
    clearTimeout(cur.timer);
    cur.timer = setTimeout(() => dismiss(kind), TOAST_MS);
    return;
  }
  const el = document.createElement('div');
  el.className = `toast ${k.cls}`;
  el.dataset.kind = kind;
  const b = document.createElement('b');
  b.textContent = n > 1 ? `${n} ${k.many}` : text;
  const s = document.createElement('span');
  s.textContent = n > 1 ? `latest: ${text}` : detail;
  el.append(b, s);
  $('toasts').append(el);
  open.set(kind, { el, count: n, since: now, timer: setTimeout(() => dismiss(kind), TOAST_MS) });
}
function dismiss(kind) {
  const cur = open.get(kind);
  if (!cur) return;
  open.delete(kind);
  cur.el.classList.add('out');
  setTimeout(() => cur.el.remove(), 450);
}

// ---- the live feed -------------------------------------------------------------------------
function addToFeed(ev, alert = false) {
  const { text, detail } = describe(ev);
  const li = document.createElement('li');
  li.dataset.channel = ev.channel;
  li.dataset.type = ev.type;
  li.dataset.id = ev.payload?.id ?? '';
  const t = document.createElement('time');
  const at = new Date(ev.timestamp);
  t.dateTime = at.toISOString();
  t.textContent = fmtTime(at);
  const ch = document.createElement('span');
  ch.className = `ch ${ev.channel}`;
  ch.textContent = ev.channel;
  const what = document.createElement('span');
  what.className = 'what';
  what.textContent = detail ? `${text} · ${detail}` : text;
  what.title = what.textContent;
  li.append(t, ch, what);
  // An alert (a stock-out) can be acknowledged: every open dashboard shows who did, and the
  // sinks' escalations stay quiet. Shown on a visible page, it counts as seen.
  if (alert) {
    li.dataset.eventId = ev.id;
    li.classList.add('alert');
    const by = document.createElement('span');
    by.className = 'acked';
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'ack';
    btn.textContent = 'acknowledge';
    btn.addEventListener('click', () => {
      btn.disabled = true;
      rt.ack(ev, 'acknowledged').catch((e) => {
        btn.disabled = false;
        console.warn(e);
      });
    });
    li.append(by, btn);
    rt.seen(ev);
  }
  const feed = $('feed');
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  $('feed-empty').hidden = true;
}
for (const btn of document.querySelectorAll('.filters button')) {
  btn.addEventListener('click', () => {
    for (const b of document.querySelectorAll('.filters button')) b.setAttribute('aria-pressed', String(b === btn));
    $('feed').dataset.filter = btn.dataset.filter;
  });
}

// ---- today's numbers -----------------------------------------------------------------------
function renderNumbers() {
  for (const t of TYPES) $(`c-${t}`).textContent = counts[t].toLocaleString();
  const chart = $('chart');
  const max = Math.max(1, ...hours);
  const nowHour = new Date().getUTCHours();
  if (chart.children.length !== 24) {
    chart.innerHTML = '';
    for (let h = 0; h < 24; h++) {
      const bar = document.createElement('div');
      bar.className = 'bar';
      if (h % 6 === 0) {
        const label = document.createElement('span');
        label.textContent = String(h).padStart(2, '0');
        bar.append(label);
      }
      chart.append(bar);
    }
  }
  [...chart.children].forEach((bar, h) => {
    bar.style.height = `${(hours[h] / max) * 100}%`;
    bar.title = `${String(h).padStart(2, '0')}:00 UTC · ${hours[h]} events`;
    bar.classList.toggle('now', h === nowHour);
  });
}
async function loadNumbers() {
  try {
    const r = await fetch('/api/realtime/stats', { headers: await rt.headers() });
    if (!r.ok) return;
    const s = await r.json();
    $('cluster-connections').textContent = s.total?.connections ?? '–';
    $('cluster-instances').textContent = s.total?.instances ?? '–';
    if (s.daily) {
      $('today-date').textContent = s.daily.date;
      for (const t of TYPES) counts[t] = s.daily.by_type?.[t] ?? 0;
      hours = s.daily.hours ?? hours;
      renderNumbers();
    }
  } catch {
    // The indicator already says when the gateway cannot be reached.
  }
}

// ---- the sinks' destinations (admin; hidden when there are none, as on the memory bus) ------
function destinationState(d) {
  if (d.state === 'disabled') return { label: 'disabled', title: d.disabled_because ?? '' };
  if (d.state === 'backing_off') {
    return { label: `backing off until ${fmtTime(new Date(d.backing_off_until))}`, title: d.last_error ?? '' };
  }
  return { label: 'healthy', title: d.last_error ? `last error: ${d.last_error}` : '' };
}
async function loadDestinations() {
  try {
    const r = await fetch('/api/sinks/destinations', { headers: await rt.headers() });
    if (!r.ok) return;
    const { destinations, escalations } = await r.json();
    $('sinks').hidden = destinations.length === 0;
    renderEscalations(escalations);
    // make run's development destinations page, when this process has one.
    $('sinks-dev').hidden = !offers.has('dev-sinks');
    const rows = $('sinks-rows');
    rows.innerHTML = '';
    for (const d of destinations) {
      const tr = document.createElement('tr');
      tr.dataset.name = d.name;
      tr.dataset.state = d.state;
      const { label, title } = destinationState(d);
      const last = d.last_accepted_at ? fmtTime(new Date(d.last_accepted_at)) : '–';
      for (const [text, cls] of [[d.name], [d.kind ?? '?'], [label, 'state'], [String(d.backlog)], [String(d.dead_letters), d.dead_letters ? 'dead' : ''], [last]]) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        if (cls === 'state') td.title = title;
        tr.append(td);
      }
      rows.append(tr);
    }
  } catch {
    // The indicator already says when the gateway cannot be reached.
  }
}

// ---- presence: who is on a dashboard now (the users of any channel it follows) -------------
const rosters = new Map(); // channel -> [{user, connections}]
rt.on('presence', (m) => {
  rosters.set(m.channel, m.users);
  const users = [...new Set([...rosters.values()].flat().map((u) => u.user))].sort();
  $('operators').hidden = users.length === 0;
  $('operators-count').textContent = String(users.length);
  $('operators-label').textContent = users.length === 1 ? 'operator online' : 'operators online';
  $('operators').title = users.join(', ');
  $('operators').dataset.users = users.join(' ');
});

// ---- acknowledgements: "acknowledged by" on every open dashboard ---------------------------
function showAck(ev) {
  const d = ev.payload?.data || {};
  for (const li of document.querySelectorAll('#feed li.alert')) {
    if (li.dataset.eventId !== ev.payload?.id || li.dataset.channel !== ev.channel) continue;
    const by = new Set((li.dataset.ackedBy ?? '').split(' ').filter(Boolean));
    by.add(d.user ?? '?');
    li.dataset.ackedBy = [...by].join(' ');
    li.querySelector('.acked').textContent = `acknowledged by ${[...by].join(', ')}`;
    li.querySelector('button.ack').hidden = true;
  }
}

// What the escalating routes hold (waiting for an acknowledgement) and what they decided.
function renderEscalations(e) {
  const rows = $('escalation-rows');
  rows.innerHTML = '';
  $('escalations').hidden = !e || e.routes.length === 0;
  if (!e) return;
  const now = Date.now();
  const add = (route, text, state, why, cls) => {
    const tr = document.createElement('tr');
    tr.dataset.state = cls;
    for (const v of [route, text, state, why]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    rows.append(tr);
  };
  for (const w of e.waiting) {
    add(w.route, w.text ?? w.event_id, `waiting ${Math.max(0, Math.ceil((w.due_at - now) / 1000))} s`, 'no acknowledgement yet', 'waiting');
  }
  for (const d of e.decided.slice(0, 20)) {
    const why = d.decision === 'suppressed' ? `${d.kind} by ${d.by} at ${fmtTime(new Date(Number(d.acked_at)))}` : (d.why ?? '');
    add(d.route, d.text ?? d.event_id, d.decision, why, d.decision);
  }
}

// ---- wiring ----------------------------------------------------------------------------------
rt.on('*', (ev, { group }) => {
  lastUpdate = new Date();
  showLast();
  // The bell shows the user's notifications; the feed and counters are the shop's events.
  if (PRIVATE_TYPES.has(ev.type)) return;
  if (ev.type === 'ACK') return showAck(ev);
  const { kind, text, detail } = describe(ev);
  addToFeed(ev, kind === 'stockout' && !group);
  if (ev.type in counts) counts[ev.type] += 1;
  hours[new Date().getUTCHours()] += 1;
  renderNumbers();
  // A grouped burst gets one toast for all of it (below); singles get their own.
  if (kind && !group) toast(kind, text, detail);
});
rt.on('group', (g) => {
  if (PRIVATE_TYPES.has(g.type) || g.type === 'ACK') return;
  const last = { type: g.type, channel: g.channel, payload: g.payloads[g.payloads.length - 1], timestamp: g.timestamp };
  const { text } = describe(last);
  const kinds = g.payloads.map((p) => describe({ ...last, payload: p }).kind).filter(Boolean);
  if (kinds.length) toast(kinds[0], text, '', kinds.length);
});
rt.on('resync', () => loadNumbers());

// ---- the bell: per-user notifications, unread state shared by every device ----------------
const nc = new NotificationCenter(rt);
function renderBell() {
  const n = nc.unread;
  $('bell-badge').hidden = n === 0;
  $('bell-badge').textContent = n > 99 ? '99+' : String(n);
  $('bell-label').textContent = n === 0 ? 'no unread notifications' : `${n} unread notifications`;
  const list = $('bell-list');
  list.innerHTML = '';
  for (const item of nc.items.slice(0, 50)) {
    const li = document.createElement('li');
    li.dataset.id = item.id;
    li.dataset.read = String(item.read);
    li.dataset.type = item.type;
    const b = document.createElement('b');
    b.textContent = item.title;
    const s = document.createElement('span');
    s.textContent = item.message;
    const t = document.createElement('time');
    const at = new Date(item.created_at);
    t.dateTime = at.toISOString();
    t.textContent = fmtTime(at);
    li.append(b, s, t);
    li.addEventListener('click', () => {
      if (!item.read) nc.markRead(item.id).catch((e) => console.warn(e));
    });
    list.append(li);
  }
  $('bell-empty').hidden = list.children.length > 0;
}
nc.onChange(({ reason, notification }) => {
  renderBell();
  if (reason === 'new' && notification) toast('notify', notification.title, notification.message);
});
$('bell').addEventListener('click', () => {
  const panel = $('bell-panel');
  panel.hidden = !panel.hidden;
  $('bell').setAttribute('aria-expanded', String(!panel.hidden));
});
$('bell-read-all').addEventListener('click', () => nc.markAllRead().catch((e) => console.warn(e)));
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !$('bell-panel').hidden) {
    $('bell-panel').hidden = true;
    $('bell').setAttribute('aria-expanded', 'false');
  }
});
renderBell();
setInterval(showLast, 1000);
setInterval(loadNumbers, 10000);
setInterval(loadDestinations, 5000);
renderNumbers();
loadNumbers();
loadDestinations();
rt.start();
window.rakudaRealtime = rt; // for the console, and for the browser test
window.rakudaNotifications = nc;
