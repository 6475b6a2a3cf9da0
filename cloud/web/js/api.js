// The API client. The key lives in sessionStorage (gone with the tab) and goes with every call;
// who it belongs to (tenant, role) comes from GET /api/v1/me.

import { KEY, dropEarly, takeEarly } from './boot.js';

export const session = { me: null, get key() { return sessionStorage.getItem(KEY); } };

export class ApiError extends Error {
  constructor(status, detail, data) { super(detail); this.status = status; this.data = data; }  // data: the problem+json
}

export async function request(path, { method = 'GET', body, headers = {}, key = session.key, signal } = {}) {
  const init = { method, signal, headers: { Authorization: `Bearer ${key}`, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  // A GET the page started as it booted (boot.js) is answered by that request; if it failed, asked again.
  const early = method === 'GET' ? takeEarly(path, key) : null;
  const r = (early && await early.catch(() => null)) || await fetch(path, init);
  const data = (r.headers.get('content-type') || '').includes('json') ? await r.json() : await r.text();
  if (r.status === 401 && key === session.key) logout();
  if (!r.ok) throw new ApiError(r.status, data?.detail || data?.title || `HTTP ${r.status}`, data);
  return { data, etag: r.headers.get('etag') };
}

export const api = async (path, opts) => (await request(path, opts)).data;

// Every page of a list endpoint ({items, next_cursor}).
export async function listAll(path, opts) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path, opts);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

export async function login(key) {
  const me = await api('/api/v1/me', { key });
  sessionStorage.setItem(KEY, key);
  session.me = me;
  return me;
}

export function logout() {
  sessionStorage.removeItem(KEY);
  dropEarly();
  session.me = null;
  if (location.hash !== '#/login') location.hash = '#/login';
}

// Roles go viewer < operator < admin; the API enforces them, the page only stops offering what would fail.
export const canOperate = () => ['operator', 'admin'].includes(session.me?.role);

// Live telemetry and alert events of some assets; reconnects with backoff until closed.
export function live(assets, onMessage, signal) {
  let ws;
  let retryMs = 500;
  const open = () => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    ws = new WebSocket(`${proto}://${location.host}/api/v1/live?api_key=${encodeURIComponent(session.key)}`);
    ws.onopen = () => { retryMs = 500; ws.send(JSON.stringify({ subscribe: assets.slice(0, 1000) })); };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data));
    ws.onclose = () => {
      if (!signal.aborted && session.key) setTimeout(open, (retryMs = Math.min(retryMs * 2, 30000)));
    };
  };
  open();
  signal.addEventListener('abort', () => ws.close());
}

// The asset types (points, units, ranges), fetched once per page load.
let types;
export async function assetTypes() {
  types ??= api('/api/v1/asset-types').then((page) => Object.fromEntries(page.items.map((t) => [t.id, t])));
  return types.catch((err) => { types = null; throw err; });
}

// The packs (what each kind of asset means: its panel, its what-if), by asset type, fetched once per page load.
let packs;
export async function assetPacks() {
  packs ??= api('/api/v1/packs').then((page) => Object.fromEntries(page.items.map((p) => [p.type, p])));
  return packs.catch((err) => { packs = null; throw err; });
}

// A pack's panel module (cloud/packs/<kind>/panel.js), served beside the dashboard's own; null when it has none.
export async function packPanel(pack) {
  if (!pack?.panel) return null;
  return import(new URL(`../${pack.panel}`, import.meta.url).href).catch(() => null);
}
