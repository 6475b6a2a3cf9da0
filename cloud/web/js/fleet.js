// Fleet view: every asset with status, health, open alerts and key live values, filtered by site, type,
// status or text. One GET /api/v1/twins for the lot; live values over the WebSocket; a refresh every 30 s.

import { assetTypes, listAll, live } from './api.js';
import { FLEET } from './boot.js';
import { fmtAgo, fmtValue, h, humanize, message } from './dom.js';

const ROW = document.createElement('template');
ROW.innerHTML = '<div role="row" class="row"><div role="cell"><a></a><div class="muted small"></div></div>'
  + '<div role="cell"></div><div role="cell"></div><div role="cell"><span></span></div>'
  + '<div role="cell" class="health"><meter min="0" max="1" low="0.5" high="0.8" optimum="1"></meter><span></span></div>'
  + '<div role="cell"><span></span></div><div role="cell" class="kvs"></div><div role="cell" class="muted"></div></div>';
const KV = document.createElement('template');
KV.innerHTML = '<span class="kv"><span class="kv-k"></span><span class="kv-v"></span></span>';
const filters = { q: '', site: '', type: '', status: '', sort: 'asset' };  // kept across visits
const STATUSES = ['online', 'stale', 'offline'];
const byName = new Intl.Collator().compare;  // localeCompare's order, without a collator per call
const SORTS = {
  asset: (a, b) => byName(a.asset, b.asset),
  health: (a, b) => a.health - b.health || byName(a.asset, b.asset),
  alerts: (a, b) => b.open_alerts - a.open_alerts || byName(a.asset, b.asset),
};

// The points worth showing: those the type watches (a normal range), else its first numbers; at most three.
function keyPoints(type) {
  const points = Object.entries(type.points).filter(([, p]) => p.kind !== 'text')
    .map(([id, p]) => ({ id, unit: p.unit, label: humanize(id), watched: Boolean(p.normal_range) }));
  const watched = points.filter((p) => p.watched);
  return (watched.length ? watched : points).slice(0, 3);
}
const untypedPoints = (latest) => Object.keys(latest).slice(0, 3).map((id) => ({ id, label: humanize(id) }));

const matches = (t) => (!filters.site || t.site === filters.site || t.line === filters.site)
  && (!filters.type || t.type === filters.type) && (!filters.status || t.status === filters.status)
  && (!filters.q || `${t.asset} ${t.name}`.toLowerCase().includes(filters.q.toLowerCase()));

function options(label, values, current) {
  return [h('option', { value: '' }, label),
    ...values.map((v) => h('option', { value: v, selected: v === current }, v))];
}

export async function renderFleet(root, signal) {
  const [twins, types] = await Promise.all([listAll(FLEET, { signal }), assetTypes()]);
  if (signal.aborted) return;
  performance.mark('fleet:data');
  const cells = new Map();  // "asset/point" -> the span showing its value
  const pointsOf = new Map(Object.values(types).map((t) => [t, keyPoints(t)]));
  // A row of each type with its key values' labels in place: a row is then one clone, whatever its points.
  const rowOf = new Map();
  const rowTemplate = (type, points) => {
    let el = type && rowOf.get(type);
    if (!el) {
      el = ROW.content.firstElementChild.cloneNode(true);
      for (const p of points) {
        const kv = KV.content.firstElementChild.cloneNode(true);
        kv.firstChild.textContent = p.label;
        el.children[6].append(kv);
      }
      if (type) rowOf.set(type, el);
    }
    return el;
  };
  let current = twins;
  const counts = h('section', { class: 'counts', id: 'fleet-counts' });
  const tbody = h('div', { role: 'rowgroup' });
  const shown = h('span', { class: 'muted', id: 'fleet-shown' });
  // A grid of rows rather than a <table>: rows out of view skip layout (content-visibility), so a fleet of
  // thousands lays out as fast as one screenful.
  const table = h('div', { role: 'table', class: 'fleet', id: 'fleet-table' },
    h('div', { role: 'row', class: 'row head' }, ['Asset', 'Type', 'Site', 'Status', 'Health', 'Alerts', 'Key values',
      'Last seen'].map((c) => h('div', { role: 'columnheader' }, c))), tbody);

  // Rows are clones of their type's template filled with text: thousands render in a few tens of milliseconds.
  const row = (t) => {
    const type = types[t.type];
    const points = type ? pointsOf.get(type) : untypedPoints(t.latest);
    const el = rowTemplate(type, points).cloneNode(true);
    const [asset, typ, site, status, health, alerts, kvs, seen] = el.children;
    el.dataset.asset = t.asset;
    el.dataset.status = t.status;
    asset.firstChild.href = `#/asset/${encodeURIComponent(t.asset)}`;
    asset.firstChild.textContent = t.asset;
    asset.lastChild.textContent = t.name;
    typ.textContent = type?.name || t.type || '—';
    site.textContent = [t.site, t.line].filter(Boolean).join(' / ') || '—';
    status.firstChild.textContent = t.status;
    status.firstChild.className = `badge b-${t.status}`;
    health.firstChild.value = t.health;
    health.lastChild.textContent = ` ${Math.round(t.health * 100)}%`;
    alerts.firstChild.textContent = String(t.open_alerts);
    alerts.firstChild.className = t.open_alerts ? `badge b-${t.worst_severity || 'medium'}` : 'muted';
    let kv = kvs.firstChild;
    for (const p of points) {
      kv.lastChild.textContent = fmtValue(t.latest[p.id], p.unit);
      cells.set(`${t.asset}/${p.id}`, { span: kv.lastChild, unit: p.unit });
      kv = kv.nextSibling;
    }
    seen.textContent = fmtAgo(t.last_seen_ns);
    return el;
  };

  const render = (list) => {
    const by = Object.groupBy(list, (t) => t.status);
    const card = (label, n, status) => h('button', {
      type: 'button', class: `count${filters.status === status ? ' active' : ''}`, dataset: { status: status || 'all' },
      onclick: () => { filters.status = filters.status === status ? '' : status; render(list); },
    }, h('span', { class: 'n' }, String(n)), h('span', {}, label));
    counts.replaceChildren(card('assets', list.length, ''),
      ...STATUSES.map((s) => card(s, by[s]?.length || 0, s)),
      h('div', { class: 'count static' }, h('span', { class: 'n' }, String(list.reduce((n, t) => n + t.open_alerts, 0))),
        h('span', {}, 'open alerts')));
    cells.clear();
    const visible = list.filter(matches).sort(SORTS[filters.sort]);
    tbody.replaceChildren(...visible.map(row));
    shown.textContent = `showing ${visible.length} of ${list.length}`;
    table.dataset.rows = String(visible.length);
    statusSel.value = filters.status;
  };

  const setFilter = (key) => (e) => { filters[key] = e.target.value; render(current); };
  const uniq = (f) => [...new Set(twins.flatMap(f).filter(Boolean))].sort();
  const statusSel = h('select', { id: 'filter-status', onchange: setFilter('status') },
    options('any status', STATUSES, filters.status));
  const bar = h('div', { class: 'toolbar' },
    h('input', { type: 'search', id: 'filter-q', placeholder: 'find asset…', value: filters.q,
      oninput: setFilter('q') }),
    h('select', { id: 'filter-site', onchange: setFilter('site') }, options('all sites', uniq((t) => [t.site, t.line]), filters.site)),
    h('select', { id: 'filter-type', onchange: setFilter('type') }, options('all types', uniq((t) => [t.type]), filters.type)),
    statusSel,
    h('select', { id: 'sort', onchange: setFilter('sort') },
      Object.keys(SORTS).map((k) => h('option', { value: k, selected: k === filters.sort }, `sort by ${k}`))),
    shown);

  root.append(h('h1', {}, 'Fleet'), counts, bar,
    twins.length ? table : message('No assets yet: they appear when a gateway sends their first data.'));
  render(current);
  performance.mark('fleet:dom');
  void table.offsetHeight;  // styled and laid out: what the first frame paints
  performance.mark('fleet:rendered');
  document.body.dataset.fleetReadyMs = performance.now().toFixed(0);  // since navigation start

  live(twins.map((t) => t.asset), (m) => {
    if (m.type !== 'telemetry' || !m.values.length) return;
    const cell = cells.get(`${m.asset}/${m.point}`);
    if (cell) cell.span.textContent = fmtValue(m.values.at(-1), cell.unit);
  }, signal);
  const timer = setInterval(async () => {
    try {
      current = await listAll(FLEET, { signal });
      render(current);
    } catch { /* left the page, or the server is away: the next tick tries again */ }
  }, 30000);
  signal.addEventListener('abort', () => clearInterval(timer));
}
