// A page's first requests, started as soon as the document names this module (it imports nothing and is
// loaded async), so they run while the other modules download: who the key belongs to and, on the fleet
// view, its twins and the asset types. api.js takes each answer once (takeEarly), for the same key.

export const KEY = 'assettwin.key';
export const FLEET = '/api/v1/twins?limit=5000';
const early = new Map();  // path -> { key, response: Promise<Response> }

function start(path) {
  const key = sessionStorage.getItem(KEY);
  if (key && !early.has(path)) {
    early.set(path, { key, response: fetch(path, { headers: { Authorization: `Bearer ${key}` } }) });
  }
}

// The early response to a GET of `path` with `key`, or null (none, or already taken).
export function takeEarly(path, key) {
  const got = early.get(path);
  if (!got || got.key !== key) return null;
  early.delete(path);
  return got.response;
}

export const dropEarly = () => early.clear();

start('/api/v1/me');
if (/^(#\/?(fleet)?)?$/.test(location.hash)) {
  start(FLEET);
  start('/api/v1/asset-types');
}
