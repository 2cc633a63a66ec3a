// The development destinations page: polls /dev/sinks/received and renders each request as its
// destination would show it. For Web Push this page is the browser: it subscribes on the gateway
// with keys it made (kept in localStorage), decrypts every message (RFC 8291 aes128gcm) and
// checks its VAPID signature (RFC 8292), all with WebCrypto.
const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const b64u = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), (c) => c.charCodeAt(0));
const toB64u = (a) => btoa(String.fromCharCode(...new Uint8Array(a))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const concat = (...parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let i = 0; for (const p of parts) { out.set(p, i); i += p.length; } return out; };
const fmt = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };

let token = null;
async function auth() {
  if (!token) token = (await (await fetch('/api/dev/token')).json()).token;
  return { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
}

// ---- Web Push: this page's subscription --------------------------------------------------------
let sub = null; // { id, endpoint, priv (CryptoKey), pub (raw bytes), auth (bytes) }
async function subscription(base) {
  const saved = JSON.parse(localStorage.getItem('rakuda-dev-push') || 'null');
  let priv, pub, authSecret, id;
  if (saved) {
    priv = await crypto.subtle.importKey('jwk', saved.jwk, { name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    pub = b64u(saved.pub); authSecret = b64u(saved.auth); id = saved.id;
  } else {
    const pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    priv = pair.privateKey;
    pub = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    authSecret = crypto.getRandomValues(new Uint8Array(16));
    id = toB64u(crypto.getRandomValues(new Uint8Array(12)));
    localStorage.setItem('rakuda-dev-push', JSON.stringify({ jwk: await crypto.subtle.exportKey('jwk', priv), pub: toB64u(pub), auth: toB64u(authSecret), id }));
  }
  const endpoint = base + id;
  const r = await fetch('/api/push/subscriptions', { method: 'POST', headers: await auth(),
    body: JSON.stringify({ endpoint, expirationTime: null, keys: { p256dh: toB64u(pub), auth: toB64u(authSecret) } }) });
  if (!r.ok) throw new Error(`subscribing: HTTP ${r.status} ${await r.text()}`);
  return { id, endpoint, priv, pub, auth: authSecret };
}

async function hkdf(salt, ikm, info, len) {
  const k = await crypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, k, len * 8));
}

// RFC 8188 / 8291: salt(16) rs(4) idlen(1) keyid(the sender's public key) ciphertext.
async function decrypt(body) {
  const salt = body.slice(0, 16); const idlen = body[20];
  const keyid = body.slice(21, 21 + idlen); const ct = body.slice(21 + idlen);
  const sender = await crypto.subtle.importKey('raw', keyid, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: 'ECDH', public: sender }, sub.priv, 256));
  const ikm = await hkdf(sub.auth, shared, concat(enc.encode('WebPush: info\0'), sub.pub, keyid), 32);
  const cek = await hkdf(salt, ikm, enc.encode('Content-Encoding: aes128gcm\0'), 16);
  const nonce = await hkdf(salt, ikm, enc.encode('Content-Encoding: nonce\0'), 12);
  const key = await crypto.subtle.importKey('raw', cek, 'AES-GCM', false, ['decrypt']);
  const plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce }, key, ct));
  let end = plain.length - 1;
  while (end > 0 && plain[end] === 0) end--; // the padding, then its delimiter (2)
  return JSON.parse(new TextDecoder().decode(plain.slice(0, end)));
}

// `vapid t=<ES256 JWT>, k=<the sender's public key>`: k is the deployment's, the JWT verifies.
async function vapid(header, expected) {
  const m = /t=([^,\s]+),\s*k=([^,\s]+)/.exec(header || '');
  if (!m || m[2] !== expected) return false;
  const [h, p, s] = m[1].split('.');
  const key = await crypto.subtle.importKey('raw', b64u(m[2]), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, b64u(s), enc.encode(`${h}.${p}`));
  const claims = JSON.parse(new TextDecoder().decode(b64u(p)));
  return ok && claims.exp * 1000 > Date.now() && claims.sub;
}

// Standard Webhooks: v1,<base64 HMAC-SHA256 of id.timestamp.body> under the secret.
async function signed(item, secret) {
  const key = await crypto.subtle.importKey('raw', Uint8Array.from(atob(secret.slice(6)), (c) => c.charCodeAt(0)), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = await crypto.subtle.sign('HMAC', key, enc.encode(`${item.headers['webhook-id']}.${item.headers['webhook-timestamp']}.${item.body}`));
  const want = `v1,${btoa(String.fromCharCode(...new Uint8Array(mac)))}`;
  return (item.headers['webhook-signature'] || '').split(' ').includes(want);
}

// ---- rendering, one way per kind ------------------------------------------------------------------
const kinds = {};
async function render(item, meta) {
  const kind = kinds[item.destination] || item.destination;
  const li = el('li', kind);
  li.dataset.n = item.n;
  const body = () => { try { return JSON.parse(item.body); } catch { return {}; } };
  if (kind === 'slack') {
    const b = body();
    const text = el('div');
    // Slack shows its escapes (&lt; &gt; &amp;) as the characters; as text, never as markup.
    const shown = (b.text ?? '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
    text.append(el('b', '', 'rakuda '), el('time', '', fmt(item.at)), el('div', 'text', shown));
    li.append(el('div', 'avatar', 'R'), text);
  } else if (kind === 'discord') {
    const b = body();
    li.append(el('b', '', 'rakuda '), el('time', '', fmt(item.at)), el('div', 'text', b.content ?? b.embeds?.[0]?.description ?? ''));
  } else if (kind === 'line') {
    li.append(el('div', 'text', body().messages?.[0]?.text ?? ''));
    li.dataset.retryKey = item.headers['x-line-retry-key'] || '';
  } else if (kind === 'webhook') {
    const ok = await signed(item, meta.webhook_secret);
    li.dataset.verified = String(ok);
    li.append(el('span', ok ? 'ok' : 'bad', ok ? 'signature ✓ ' : 'signature ✗ '), el('time', '', `${fmt(item.at)} · ${item.headers['webhook-id']}`),
      el('pre', '', JSON.stringify(body(), null, 2)));
  } else if (kind === 'web_push') {
    if (!sub || !item.target.endsWith(`/${sub.id}`)) {
      li.append(el('span', 'meta', `for another page's subscription (${item.target})`));
    } else {
      try {
        const shown = await decrypt(b64u(item.body));
        const signer = await vapid(item.headers.authorization, meta.vapid_public_key);
        li.dataset.decrypted = 'true';
        li.dataset.vapid = String(Boolean(signer));
        li.dataset.entity = shown.data?.entity ?? '';
        li.append(el('div', 'title', shown.title), el('div', '', shown.body),
          el('div', 'meta', `decrypted ✓ · VAPID ${signer ? `✓ (${signer})` : '✗'} · TTL ${item.headers.ttl} · ${item.headers.urgency} · topic ${item.headers.topic}`));
        if (Notification.permission === 'granted') new Notification(shown.title, { body: shown.body, tag: shown.tag });
      } catch (e) {
        li.dataset.decrypted = 'false';
        li.append(el('span', 'bad', `cannot decrypt: ${e}`));
      }
    }
  } else {
    li.append(el('pre', '', item.body));
  }
  $(`list-${item.destination}`)?.append(li);
}

let after = 0;
let meta = null;
async function poll() {
  try {
    const r = await (await fetch(`/dev/sinks/received?after=${after}`)).json();
    if (!meta) {
      meta = r.meta;
      for (const d of meta.destinations) {
        kinds[d.name] = d.kind;
        const s = el('section');
        s.id = `dest-${d.name}`;
        const h = el('h2', '', `${d.name} `);
        h.append(el('small', '', d.kind));
        s.append(h, el('ol'));
        s.querySelector('ol').id = `list-${d.name}`;
        $('columns').append(s);
      }
      try {
        sub = await subscription(meta.push_endpoint_base);
        $('push-status').textContent = `Web Push: subscribed (${sub.endpoint})`;
        $('push-status').dataset.subscribed = 'true';
      } catch (e) {
        $('push-status').textContent = `Web Push: ${e}`;
      }
    }
    for (const item of r.received) {
      after = Math.max(after, item.n);
      await render(item, meta);
    }
  } catch (e) {
    console.warn('polling', e);
  }
}
$('allow').addEventListener('click', () => Notification.requestPermission());
setInterval(poll, 1000);
poll();
