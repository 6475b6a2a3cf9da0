// Shipments: lists GET /api/v1/shipments when the server has it (columns from the items themselves),
// and says so when it does not.

import { ApiError, listAll } from './api.js';
import { fmtTime, h, humanize, message } from './dom.js';

const cell = (k, v) => (k.endsWith('_ns') && typeof v === 'number' ? fmtTime(v)
  : v != null && typeof v === 'object' ? JSON.stringify(v) : String(v ?? '—'));

export async function renderShipments(root, signal) {
  root.append(h('h1', {}, 'Shipments'));
  let items;
  try {
    items = await listAll('/api/v1/shipments?limit=500', { signal });
  } catch (err) {
    if (!(err instanceof ApiError) || ![404, 405, 501].includes(err.status)) throw err;
    root.append(message('Shipments are not available on this server yet: it has no /api/v1/shipments.', 'info'));
    return;
  }
  if (!items.length) {
    root.append(message('No shipments yet.', 'info'));
    return;
  }
  const cols = [...new Set(items.flatMap((s) => Object.keys(s)))].slice(0, 10);
  root.append(h('table', { class: 'grid', id: 'shipments-table' },
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, humanize(c))))),
    h('tbody', {}, items.map((s) => h('tr', {}, cols.map((c) => h('td', {}, cell(c, s[c]))))))));
}
