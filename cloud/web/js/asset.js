// Asset view: a live chart per point (WebSocket), history on zoom with server-side aggregation,
// anomalies and alerts on the timeline, the twin's reported and desired state with the delta, the panel of
// the asset's pack (cloud/packs/<kind>/panel.js) and a what-if over POST /api/v1/assets/{id}/simulate with
// the pack's questions.

import { ApiError, api, assetPacks, assetTypes, canOperate, live, packPanel, request } from './api.js';
import { timeChart } from './charts.js';
import { describeEvidence } from './evidence.js';
import {
  NS, badge, fill, fmtAgo, fmtDuration, fmtTime, fmtValue, h, healthBar, humanize, message, nowNs, unitLabel,
} from './dom.js';
import { renderWhatIf } from './whatif.js';

const RANGES = [['15 min', 900], ['1 h', 3600], ['6 h', 21600], ['24 h', 86400], ['7 d', 604800],
  ['30 d', 2592000], ['1 y', 31536000]];
const RAW_MAX_S = 900;  // up to this span, raw samples; beyond, ~600 server-side windows of a round size
// Window sizes the server's roll-ups (1 min, 1 h) answer exactly when they are whole multiples of them.
const WINDOWS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
  172800, 604800];
const windowFor = (spanS) => WINDOWS_S.find((w) => w >= spanS / 600) ?? Math.ceil(spanS / 600 / 86400) * 86400;
// Where the history came from: raw samples while they are kept, roll-ups beyond (the API's "sources").
const describeSources = (sources) => (sources || []).map((x) => (x.resolution === 'raw'
  ? `raw samples from ${fmtTime(x.start_ns)}` : `${x.resolution} roll-up up to ${fmtTime(x.end_ns)}`)).join(', ');
const SEVERITY_COLOR = { low: '#65a30d', medium: '#d97706', high: '#dc2626', critical: '#7f1d1d' };

export async function renderAsset(root, signal, assetId) {
  const path = encodeURIComponent(assetId);
  const [first, types, packs] = await Promise.all([request(`/api/v1/twins/${path}`, { signal }), assetTypes(),
    assetPacks().catch(() => ({}))]);  // a server without packs: no panel, no what-if questions
  let { data: twin, etag } = first;  // etag: the version a desired-state change is based on (If-Match)
  const type = types[twin.type] || { points: {}, local_rules: [] };
  const pack = packs[twin.type];
  const panel = await packPanel(pack);
  const spec = (p) => type.points[p] || {};
  const pointIds = [...new Set([...Object.keys(type.points), ...Object.keys(twin.reported.points)])]
    .filter((p) => spec(p).kind !== 'text');  // text points (ids, states) are in the twin panel, not charted
  const view = { span: RANGES[0][1], live: true, min: 0, max: 0, agg: 'mean' };
  const events = { anomalies: [], alerts: [], alarms: [] };
  const charts = {};  // point -> {chart, el, t, v}

  // -- header and toolbar ------------------------------------------------------------------------
  const header = h('div', { class: 'asset-head' });
  const renderHeader = () => header.replaceChildren(
    h('a', { href: '#/fleet', class: 'back' }, '← Fleet'),
    h('h1', {}, assetId, ' ', badge(twin.status), ' ', healthBar(twin.health)),
    h('p', { class: 'muted' }, [type.name || twin.type || 'untyped', twin.gateway && `gateway ${twin.gateway}`,
      `last data ${fmtAgo(twin.reported.last_seen_ns)}`, `twin v${twin.version}`].filter(Boolean).join(' · ')));
  renderHeader();

  const liveDot = h('span', { class: 'live-dot', id: 'live-state' }, 'live');
  const historyNote = h('span', { class: 'muted small', id: 'history-resolution' });
  const rangeButtons = RANGES.map(([label, s]) => h('button', {
    type: 'button', dataset: { span: s }, onclick: () => { Object.assign(view, { span: s, live: true }); load(); },
  }, label));
  const toolbar = h('div', { class: 'toolbar' }, h('span', { class: 'muted' }, 'last'), rangeButtons,
    h('select', { id: 'agg', title: 'aggregation of history windows',
      onchange: (e) => { view.agg = e.target.value; load(); } },
    ['mean', 'min', 'max', 'last'].map((a) => h('option', { value: a }, a))),
    liveDot, h('span', { class: 'muted small' }, 'drag across a chart to zoom into its history'), historyNote);

  // -- charts ------------------------------------------------------------------------------------
  const markers = (point) => () => {
    const s = (ns) => ns / NS;
    const bands = events.anomalies.filter((a) => a.point === point)
      .map((a) => ({ from: s(a.start_ns), to: s(a.end_ns ?? nowNs()), color: 'rgba(220,38,38,0.16)' }));
    const lines = [
      ...events.alerts.filter((a) => !a.evidence?.point || a.evidence.point === point)
        .map((a) => ({ at: s(a.opened_ns), color: SEVERITY_COLOR[a.severity] || '#d97706' })),
      ...events.alarms.filter((a) => !a.evidence?.point || a.evidence.point === point)
        .map((a) => ({ at: s(a.start_ns), color: '#7c3aed' })),
    ];
    const limits = (type.local_rules || []).filter((r) => r.point === point)
      .map((r) => ({ value: r.above ?? r.below, color: 'rgba(220,38,38,0.55)' }));
    return { bands, lines, limits };
  };
  const grid = h('div', { class: 'charts' });
  for (const p of pointIds) {
    const el = h('div', { class: 'chart', dataset: { point: p, points: '0' } });
    grid.append(h('section', { class: 'card chart-card' },
      h('h3', {}, humanize(p), h('span', { class: 'muted' }, ` ${unitLabel(spec(p).unit)}`),
        h('span', { class: 'now', dataset: { now: p } }, fmtValue(twin.reported.points[p]?.value, spec(p).unit))),
      spec(p).description ? h('p', { class: 'muted small' }, spec(p).description) : null, el));
    charts[p] = { el, t: [], v: [] };
  }

  const eventsBox = h('section', { class: 'card', id: 'asset-events' });
  const twinBox = h('section', { class: 'card', id: 'twin-state' });
  const whatIfBox = h('section', { class: 'card', id: 'what-if' });
  const packBox = h('section', { class: 'card', id: 'pack-panel', dataset: { pack: twin.type || '' } });
  root.append(header, toolbar, ...(panel?.render ? [packBox] : []), grid,
    h('div', { class: 'two' }, twinBox, eventsBox), whatIfBox);
  for (const p of pointIds) {
    charts[p].chart = timeChart(charts[p].el, {
      series: [{ label: humanize(p), unit: spec(p).unit }], markers: markers(p), syncKey: `asset-${assetId}`,
      onZoom: (min, max) => { Object.assign(view, { live: false, min, max }); load(); },
    });
  }
  signal.addEventListener('abort', () => Object.values(charts).forEach((c) => c.chart.destroy()));

  const range = () => (view.live ? { min: nowNs() / NS - view.span, max: nowNs() / NS } : { min: view.min, max: view.max });
  const draw = (p) => {
    const c = charts[p];
    const r = range();
    c.chart.set([c.t, c.v], r);
    c.el.dataset.spanS = String(Math.round(r.max - r.min));
    c.el.dataset.points = String(c.t.length);
    c.el.dataset.lastT = String(Math.round((c.t.at(-1) ?? 0) * NS));
    c.el.dataset.firstT = String(Math.round((c.t[0] ?? 0) * NS));
  };

  // -- history -----------------------------------------------------------------------------------
  let loading = 0;
  async function load() {
    const token = ++loading;
    const { min, max } = range();
    const span = max - min;
    for (const b of rangeButtons) b.classList.toggle('active', view.live && Number(b.dataset.span) === view.span);
    liveDot.textContent = view.live ? 'live' : `zoomed: ${fmtTime(min * NS)} – ${fmtTime(max * NS)} (back to live: pick a range)`;
    liveDot.classList.toggle('off', !view.live);
    const query = { start: Math.floor(min * NS), end: Math.ceil(max * NS) };
    if (span > RAW_MAX_S) {  // whole windows from a window boundary: what a roll-up answers exactly
      const every = windowFor(span);
      Object.assign(query, { start: Math.floor(min / every) * every * NS, every: `${every}s`, agg: view.agg });
    }
    try {
      await Promise.all(pointIds.map(async (p) => {
        const s = await api(`/api/v1/assets/${path}/telemetry?${new URLSearchParams({ ...query, point: p })}`, { signal });
        if (token !== loading) return;  // a newer range was asked for meanwhile
        Object.assign(charts[p], { t: s.t_ns.map((t) => t / NS), v: s.values });
        charts[p].el.dataset.resolution = s.resolution || 'raw';
        charts[p].el.title = `history: ${describeSources(s.sources)}`;
        draw(p);
      }));
      const first = pointIds.map((p) => charts[p].el.title).find((t) => t.includes('roll-up'));
      historyNote.textContent = first ? `${first} (raw samples expire; older history is rolled up)` : '';
    } catch (err) {
      if (!signal.aborted) liveDot.textContent = `could not load the history: ${err.message}`;
    }
  }

  // -- live --------------------------------------------------------------------------------------
  const dirty = new Set();
  let frame = 0;
  live([assetId], (m) => {
    if (m.type === 'telemetry' && charts[m.point]) {
      const c = charts[m.point];
      twin.reported.points[m.point] = { value: m.values.at(-1), t_ns: m.t_ns.at(-1) };
      root.querySelector(`[data-now="${CSS.escape(m.point)}"]`).textContent = fmtValue(m.values.at(-1), spec(m.point).unit);
      if (!view.live) return;
      const lastT = c.t.at(-1) ?? -Infinity;
      const fresh = m.t_ns.map((t, i) => [t / NS, m.values[i]]).filter(([t]) => t > lastT);  // not yet drawn
      fresh.forEach(([t, v]) => { c.t.push(t); c.v.push(v); });
      c.el.dataset.livePoints = String(Number(c.el.dataset.livePoints || 0) + fresh.length);
      const cut = c.t.findIndex((t) => t >= nowNs() / NS - view.span);
      if (cut > 0) { c.t.splice(0, cut); c.v.splice(0, cut); }
      dirty.add(m.point);
      frame ||= requestAnimationFrame(() => { frame = 0; dirty.forEach(draw); dirty.clear(); });
    } else if (m.type?.startsWith('alert')) {
      loadEvents().catch(() => {});  // the 30 s refresh tries again
    }
  }, signal);

  // -- anomalies, alerts, local alarms -------------------------------------------------------------
  async function loadEvents() {
    const since = nowNs() - 7 * 86400 * NS;
    const [an, al, ar] = await Promise.all([
      api(`/api/v1/assets/${path}/anomalies?start=${since}&limit=1000`, { signal }),
      api(`/api/v1/alerts?asset=${path}&limit=100`, { signal }),
      api(`/api/v1/assets/${path}/alarms?limit=100`, { signal })]);
    Object.assign(events, { anomalies: an.items, alerts: al.items, alarms: ar.items });
    Object.values(charts).forEach((c) => c.chart.redraw());
    const rows = [
      ...events.alerts.map((a) => ({ t: a.opened_ns, kind: badge(a.severity), what: h('a', { href: `#/alerts/${a.id}` }, a.title || a.rule),
        detail: `${a.state} · ${describeEvidence(a.evidence, type).join(' ')}` })),
      ...events.alarms.map((a) => ({ t: a.start_ns, kind: badge('edge alarm', 'alarm'), what: a.rule,
        detail: describeEvidence(a.evidence, type).join(' ') })),
      ...events.anomalies.map((a) => ({ t: a.start_ns, kind: badge('anomaly', 'anomaly'), what: humanize(a.point),
        detail: `peak ${fmtValue(a.peak_value, spec(a.point).unit)} (score ${a.peak_score.toFixed(2)})` +
          (a.end_ns ? `, lasted ${fmtDuration((a.end_ns - a.start_ns) / NS)}` : ', still open') })),
    ].sort((a, b) => b.t - a.t).slice(0, 50);
    eventsBox.replaceChildren(h('h2', {}, 'Alerts and anomalies'), rows.length
      ? h('table', { class: 'grid' }, h('tbody', {}, rows.map((r) => h('tr', {},
        h('td', { class: 'nowrap' }, fmtTime(r.t)), h('td', {}, r.kind), h('td', {}, r.what), h('td', { class: 'small' }, r.detail)))))
      : h('p', { class: 'muted' }, 'None in the last 7 days.'));
  }

  // -- twin: reported, desired, delta -------------------------------------------------------------
  function renderTwin(note) {
    const reported = Object.entries(twin.reported.points);
    const desired = Object.entries(twin.desired);
    fill(twinBox, [
      h('h2', {}, 'Twin ', h('span', { class: 'muted small' }, `version ${twin.version}`)),
      note || null,
      h('h3', {}, 'Reported'),
      reported.length ? h('table', { class: 'grid compact', id: 'reported' }, h('tbody', {}, reported.map(([p, r]) =>
        h('tr', {}, h('td', {}, humanize(p)), h('td', {}, fmtValue(r.value, spec(p).unit)), h('td', { class: 'muted' }, fmtAgo(r.t_ns))))))
        : h('p', { class: 'muted' }, 'Nothing reported yet.'),
      h('p', { class: 'muted small' }, `${twin.reported.active_anomalies.length} open anomalies · gateway config v${twin.reported.config_version ?? '—'}`),
      h('h3', {}, 'Desired'),
      desired.length ? h('table', { class: 'grid compact', id: 'desired' }, h('tbody', {}, desired.map(([k, v]) =>
        h('tr', { class: k in twin.delta ? 'delta' : '' }, h('td', {}, humanize(k)), h('td', {}, JSON.stringify(v)),
          h('td', { class: 'small' }, k in twin.delta ? `reports ${JSON.stringify(twin.delta[k].reported)}` : 'in sync')))))
        : h('p', { class: 'muted' }, 'No desired state set.'),
      h('p', { id: 'delta', class: Object.keys(twin.delta).length ? 'msg msg-warn' : 'muted small' },
        Object.keys(twin.delta).length ? `Delta: ${Object.keys(twin.delta).map(humanize).join(', ')} not yet as desired.` : 'Reported state matches the desired state.'),
      canOperate() ? desiredEditor() : null]);
  }

  function desiredEditor() {
    const text = h('textarea', { id: 'desired-json', rows: 4, spellcheck: 'false' }, JSON.stringify(twin.desired, null, 1));
    const reason = h('input', { id: 'desired-reason', placeholder: 'reason (kept in the audit trail)' });
    const save = async (e) => {
      e.preventDefault();
      let desired;
      try {
        desired = JSON.parse(text.value);
      } catch {
        return renderTwin(message('Desired state must be a JSON object, e.g. {"setpoint": 4.0}.', 'error'));
      }
      try {
        const r = await request(`/api/v1/twins/${path}/desired`, { method: 'PUT', body: { desired, reason: reason.value }, headers: { 'If-Match': etag } });
        ({ data: twin, etag } = r);
        renderHeader();
        renderTwin(message('Saved.', 'ok'));
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 412) return renderTwin(message(err.message, 'error'));
        ({ data: twin, etag } = await request(`/api/v1/twins/${path}`, { signal }));
        renderTwin(message('Someone changed the desired state meanwhile: it is reloaded, check it and save again.', 'warn'));
      }
    };
    return h('form', { class: 'edit', onsubmit: save }, h('label', { for: 'desired-json' }, 'Change desired state'), text, reason,
      h('button', { type: 'submit', class: 'primary', id: 'desired-save' }, 'Save desired state'));
  }

  renderTwin();
  const renderPanel = () => panel?.render?.(packBox, { twin, type, signal });
  renderPanel();
  renderWhatIf(whatIfBox, { path, signal, fields: pack?.what_if && panel?.whatIf ? panel.whatIf(type) : null,
    applyOf: canOperate() ? panel?.applyOf : null });
  await Promise.all([load(), loadEvents()]);
  const timer = setInterval(async () => {
    try {
      ({ data: twin, etag } = await request(`/api/v1/twins/${path}`, { signal }));
      renderHeader();
      if (!twinBox.contains(document.activeElement)) renderTwin();
      renderPanel();
      await loadEvents();
    } catch { /* the next tick tries again */ }
  }, 30000);
  signal.addEventListener('abort', () => clearInterval(timer));
}
