// Shipments: the list (GET /api/v1/shipments), creating one with its custody legs and batches (operators), each
// shipment's status and temperature chart (the report's chart: profile boundaries dashed, excursions shaded), the
// quarantine queue with release and reject signed by a person who re-enters their login and password (qa, admin),
// and the report as HTML or PDF. #/shipments/ID opens one shipment.

import { ApiError, api, canOperate, listAll, request, session } from './api.js';
import { badge, fmtTime, h, message } from './dom.js';

const canSign = () => ['qa', 'admin'].includes(session.me?.role);
const STATE_KIND = { available: 'online', quarantined: 'high', released: 'resolved', rejected: 'critical' };
const stateBadge = (s) => badge(s, STATE_KIND[s] || 'offline');
const isoOrNull = (v) => (v ? new Date(v).toISOString() : null);

// A form of labelled inputs; ``submit`` gets the values by name and returns a message (or throws ApiError).
function form(id, fields, label, submit) {
  const out = h('div', { class: 'form-result' });
  const inputs = fields.map((f) => h('input', { name: f.name, type: f.type || 'text', placeholder: f.placeholder,
    value: f.value, required: f.required, step: f.step, autocomplete: f.type === 'password' ? 'current-password' : 'off' }));
  const el = h('form', { id, class: 'edit inline-form' },
    fields.map((f, i) => h('label', {}, f.label, inputs[i])),
    h('button', { class: 'primary', type: 'submit' }, label), out);
  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    const values = Object.fromEntries(inputs.map((i) => [i.name, i.value.trim()]));
    try {
      out.replaceChildren(message(await submit(values), 'ok'));
    } catch (err) {
      out.replaceChildren(message(err.message, 'error'));
    }
  });
  return el;
}

// The report fetched with the key (the API needs it in a header), handed to the browser as a file.
async function openReport(id, format) {
  const r = await fetch(`/api/v1/shipments/${encodeURIComponent(id)}/report?format=${format}`,
    { headers: { Authorization: `Bearer ${session.key}` } });
  if (!r.ok) throw new ApiError(r.status, `HTTP ${r.status}`);
  const url = URL.createObjectURL(await r.blob());
  const a = h('a', { href: url, download: `shipment-${id}.${format}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// The report's own SVG chart, cut from its printable page and parsed alone as SVG (inert: no script runs, and the
// page's stylesheet is never parsed, which the dashboard's CSP would refuse).
async function chart(id, signal) {
  const { data } = await request(`/api/v1/shipments/${encodeURIComponent(id)}/report?format=html`, { signal });
  const text = String(data).match(/<svg[\s\S]*?<\/svg>/)?.[0];
  const svg = text && new DOMParser().parseFromString(text, 'image/svg+xml').documentElement;
  if (!svg || svg.nodeName !== 'svg') return message('No readings stored for this shipment yet.', 'info');
  svg.querySelectorAll('script, foreignObject').forEach((n) => n.remove());
  return document.importNode(svg, true);
}

function queue(items, reload) {
  if (!items.length) return message('No batch awaits a decision.', 'ok');
  return h('table', { class: 'grid', id: 'quarantine-table' },
    h('thead', {}, h('tr', {}, ['lot', 'shipment', 'product', 'state', canSign() ? 'sign a decision' : null]
      .map((c) => c && h('th', {}, c)))),
    h('tbody', {}, items.map((b) => h('tr', { dataset: { lot: b.lot } },
      h('td', {}, b.lot), h('td', {}, h('a', { href: `#/shipments/${encodeURIComponent(b.shipment)}` }, b.shipment)),
      h('td', {}, b.product), h('td', {}, stateBadge(b.state)),
      canSign() ? h('td', {}, signForm(b, reload)) : null))));
}

function signForm(b, reload) {
  const out = h('div', { class: 'form-result' });
  const reason = h('input', { name: 'reason', placeholder: 'reason (signed with the decision)', required: true });
  const login = h('input', { name: 'username', placeholder: 'your login', required: true, autocomplete: 'username' });
  const password = h('input', { name: 'password', type: 'password', placeholder: 'your password',
    required: true, autocomplete: 'current-password' });
  const decide = async (action) => {
    try {
      const r = await api(`/api/v1/batches/${encodeURIComponent(b.lot)}/${action}`, { method: 'POST',
        body: { reason: reason.value, username: login.value, password: password.value } });
      const d = r.decision;
      out.replaceChildren(message(`${d.record.statement}: signed by ${d.signer} at ${d.signed_at} `
        + `(Ed25519, key ${d.key_id})`, 'ok'));
      setTimeout(reload, 1500);
    } catch (err) {
      out.replaceChildren(message(err.message, 'error'));
    } finally {
      password.value = '';  // re-entered for every signature, never kept
    }
  };
  return h('div', { class: 'sign' }, reason, login, password,
    h('button', { class: 'primary', dataset: { action: 'release' }, onclick: () => decide('release') }, 'Release'),
    h('button', { dataset: { action: 'reject' }, onclick: () => decide('reject') }, 'Reject'), out);
}

async function detail(root, id, signal) {
  let sh;
  try {
    sh = await api(`/api/v1/shipments/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return message(`No shipment ${id}.`, 'error');
    throw err;
  }
  const rep = await api(`/api/v1/shipments/${encodeURIComponent(id)}/report`, { signal });
  const verdict = rep.temperature.evaluation?.verdict;
  const reload = () => { location.hash = `#/shipments/${encodeURIComponent(id)}`; window.dispatchEvent(new Event('hashchange')); };
  const box = h('section', { class: 'card', id: 'shipment-detail' },
    h('h2', {}, `Shipment ${sh.id}`, ' ', verdict ? badge(verdict.result, verdict.result === 'pass' ? 'resolved' : 'high') : null),
    h('p', { id: 'shipment-status' }, `${sh.profile} · ${sh.origin_site} → ${sh.destination_site}`,
      rep.temperature.mkt_c != null ? ` · MKT ${rep.temperature.mkt_c.toFixed(2)} °C over ${rep.temperature.readings} readings` : '',
      ` · ${rep.excursions.length} excursion(s)`,
      sh.consignee ? ` · consignee ${sh.consignee.name}${sh.consignee.grantee ? ` (${sh.consignee.grantee})` : ''}` : ''),
    h('div', { class: 'report-links' },
      h('button', { id: 'report-html', onclick: () => openReport(id, 'html') }, 'Report (HTML)'),
      h('button', { id: 'report-pdf', onclick: () => openReport(id, 'pdf') }, 'Report (PDF)')),
    h('div', { id: 'shipment-chart' }, await chart(id, signal)),
    h('h3', {}, 'Custody'),
    sh.legs.length ? h('table', { class: 'grid compact', id: 'legs-table' },
      h('thead', {}, h('tr', {}, ['container', 'point', 'from', 'to'].map((c) => h('th', {}, c)))),
      h('tbody', {}, sh.legs.map((l) => h('tr', {}, h('td', {}, h('a', { href: `#/asset/${encodeURIComponent(l.asset)}` }, l.asset)),
        h('td', {}, l.point), h('td', {}, fmtTime(l.from_ns)), h('td', {}, l.to_ns == null ? 'now' : fmtTime(l.to_ns))))))
      : message('No custody legs yet.', 'info'),
    h('h3', {}, 'Batches'),
    sh.batches.length ? h('table', { class: 'grid compact', id: 'batches-table' },
      h('thead', {}, h('tr', {}, ['lot', 'product', 'quantity', 'profile', 'state'].map((c) => h('th', {}, c)))),
      h('tbody', {}, sh.batches.map((b) => h('tr', { dataset: { lot: b.lot } }, h('td', {}, b.lot), h('td', {}, b.product),
        h('td', {}, `${b.quantity} ${b.unit}`), h('td', {}, b.profile || sh.profile), h('td', {}, stateBadge(b.state))))))
      : message('No batches yet.', 'info'),
    canOperate() ? [
      h('h3', {}, 'Add a custody leg'),
      form('leg-form', [{ name: 'asset', label: 'container', required: true },
        { name: 'from', label: 'from', type: 'datetime-local', required: true },
        { name: 'to', label: 'to (empty: still)', type: 'datetime-local' }], 'Add leg', async (v) => {
        await api(`/api/v1/shipments/${encodeURIComponent(id)}/custody`, { method: 'POST',
          body: { asset: v.asset, from: isoOrNull(v.from), to: isoOrNull(v.to) } });
        setTimeout(reload, 800);
        return `Leg in ${v.asset} added.`;
      }),
      h('h3', {}, 'Consignee (told before arrival)'),
      form('consignee-form', [{ name: 'name', label: 'name', required: true, value: sh.consignee?.name },
        { name: 'email', label: 'e-mail', value: sh.consignee?.email },
        { name: 'webhook', label: 'webhook URL', value: sh.consignee?.webhook },
        { name: 'grantee', label: 'organisation (its customer keys see this shipment)', value: sh.consignee?.grantee }],
      'Save consignee', async (v) => {
        const c = await api(`/api/v1/shipments/${encodeURIComponent(id)}/consignee`, { method: 'PUT',
          body: { name: v.name, email: v.email || null, webhook: v.webhook || null, grantee: v.grantee || null } });
        return `Consignee saved. Its webhook secret, shown this once: ${c.secret}`;
      }),
      h('h3', {}, 'Add a batch'),
      form('batch-form', [{ name: 'lot', label: 'lot', required: true }, { name: 'product', label: 'product', required: true },
        { name: 'quantity', label: 'quantity', type: 'number', step: 'any', required: true },
        { name: 'unit', label: 'unit' }, { name: 'profile', label: "product's own profile (optional)" }], 'Add batch', async (v) => {
        await api(`/api/v1/shipments/${encodeURIComponent(id)}/batches`, { method: 'POST',
          body: { lot: v.lot, product: v.product, quantity: Number(v.quantity), unit: v.unit, profile: v.profile || null } });
        setTimeout(reload, 800);
        return `Batch ${v.lot} added.`;
      }),
    ] : null);
  root.append(box);
  return null;
}

export async function renderShipments(root, signal, id) {
  root.append(h('h1', {}, 'Shipments'));
  const reload = () => window.dispatchEvent(new Event('hashchange'));
  if (id) {
    const missing = await detail(root, id, signal);
    if (missing) root.append(missing);
  }
  const [items, quarantined] = await Promise.all([listAll('/api/v1/shipments?limit=500', { signal }),
    api('/api/v1/batches?state=quarantined', { signal })]);
  root.append(h('section', { class: 'card', id: 'quarantine' }, h('h2', {}, 'Quarantine queue'),
    queue(quarantined.items, reload)));
  if (canOperate()) {
    root.append(h('details', { class: 'card', id: 'new-shipment' }, h('summary', {}, 'New shipment'),
      form('shipment-form', [{ name: 'id', label: 'id', placeholder: 'chosen by the server when empty' },
        { name: 'profile', label: 'profile', value: 'who-30-day-refrigerator', required: true },
        { name: 'origin_site', label: 'origin site', required: true },
        { name: 'destination_site', label: 'destination site', required: true },
        { name: 'reference', label: 'reference' }], 'Create', async (v) => {
        const sh = await api('/api/v1/shipments', { method: 'POST', body: { ...v, id: v.id || null } });
        setTimeout(() => { location.hash = `#/shipments/${encodeURIComponent(sh.id)}`; }, 500);
        return `Shipment ${sh.id} created: add its custody legs and batches.`;
      })));
  }
  if (!items.length) {
    root.append(message('No shipments yet.', 'info'));
    return;
  }
  root.append(h('table', { class: 'grid', id: 'shipments-table' },
    h('thead', {}, h('tr', {}, ['shipment', 'profile', 'from', 'to', 'reference', 'created'].map((c) => h('th', {}, c)))),
    h('tbody', {}, items.map((s) => h('tr', { dataset: { shipment: s.id } },
      h('td', {}, h('a', { href: `#/shipments/${encodeURIComponent(s.id)}` }, s.id)), h('td', {}, s.profile),
      h('td', {}, s.origin_site), h('td', {}, s.destination_site), h('td', {}, s.reference || '—'),
      h('td', {}, fmtTime(s.created_ns)))))));
}
