// Alerts: filter, read the evidence (words and chart), acknowledge and resolve. The buttons exist only
// for operators and admins (GET /api/v1/me); the API enforces the same.

import { api, assetTypes, canOperate, listAll } from './api.js';
import { describeEvidence, renderEvidenceChart } from './evidence.js';
import { badge, fmtAgo, fmtTime, h, message } from './dom.js';

const filters = { state: 'active', severity: '', asset: '', rule: '' };
const STATES = ['active', 'open', 'acknowledged', 'resolved', ''];
const SEVERITIES = ['', 'low', 'medium', 'high', 'critical'];
const COLUMNS = ['Severity', 'Alert', 'Asset', 'State', 'Opened', 'Last seen', 'Times'];

export async function renderAlerts(root, signal, openId) {
  const [types, assets] = await Promise.all([assetTypes(), listAll('/api/v1/assets?limit=5000', { signal })]);
  const typeOf = Object.fromEntries(assets.map((a) => [a.id, types[a.type]]));  // units and rules for the words
  let alerts = [];
  let cursor = null;
  let openDetail = null;  // {id, ctl}: the expanded alert and the AbortController of its chart
  const tbody = h('tbody');
  const more = h('button', { type: 'button', id: 'alerts-more', hidden: true, onclick: () => load(true) }, 'Load more');
  const status = h('p', { class: 'muted', id: 'alerts-status' });

  const query = () => new URLSearchParams(Object.entries({ ...filters, limit: 100, cursor })
    .filter(([, v]) => v !== '' && v != null));

  async function load(append = false) {
    if (!append) cursor = null;
    try {
      const page = await api(`/api/v1/alerts?${query()}`, { signal });
      alerts = append ? [...alerts, ...page.items] : page.items;
      cursor = page.next_cursor;
    } catch (err) {
      if (!signal.aborted) status.textContent = `Could not load alerts: ${err.message}`;
      return;
    }
    more.hidden = !cursor;
    render();
  }

  function render() {
    if (openDetail) {  // a fresh chart for the fresh detail row
      openDetail.ctl.abort();
      openDetail.ctl = new AbortController();
    }
    tbody.replaceChildren(...alerts.flatMap((a) => {
      const row = h('tr', { class: 'clickable', dataset: { alertId: a.id, state: a.state }, onclick: () => toggle(a.id) },
        h('td', {}, badge(a.severity)), h('td', {}, a.title || a.rule, h('div', { class: 'muted small' }, a.rule)),
        h('td', {}, h('a', { href: `#/asset/${encodeURIComponent(a.asset)}`, onclick: (e) => e.stopPropagation() }, a.asset)),
        h('td', { class: 'state' }, badge(a.state)), h('td', { class: 'nowrap' }, fmtTime(a.opened_ns)),
        h('td', { class: 'muted' }, fmtAgo(a.last_seen_ns)), h('td', {}, String(a.occurrences)));
      return openDetail?.id === a.id ? [row, detail(a)] : [row];
    }));
    status.textContent = alerts.length ? `${alerts.length} alert${alerts.length > 1 ? 's' : ''}${cursor ? ' (more below)' : ''}`
      : 'No alerts match these filters.';
  }

  function toggle(id) {
    openDetail?.ctl.abort();
    openDetail = openDetail?.id === id ? null : { id, ctl: new AbortController() };
    render();
  }

  function detail(a) {
    const { ctl } = openDetail;
    const chart = h('div', { class: 'chart evidence-chart' });
    renderEvidenceChart(chart, a, typeOf[a.asset], ctl.signal).catch((err) => {
      if (!ctl.signal.aborted) chart.replaceChildren(message(`Chart unavailable: ${err.message}`, 'error'));
    });
    const history = [`Opened ${fmtTime(a.opened_ns)}, seen ${a.occurrences} time${a.occurrences > 1 ? 's' : ''}, last ${fmtAgo(a.last_seen_ns)}.`,
      a.acked_ns && `Acknowledged by ${a.acked_by} at ${fmtTime(a.acked_ns)}.`,
      a.resolved_ns && `Resolved by ${a.resolved_by} at ${fmtTime(a.resolved_ns)}.`,
      a.note && `Note: ${a.note}`].filter(Boolean);
    return h('tr', { class: 'detail', dataset: { detailFor: a.id } }, h('td', { colspan: COLUMNS.length },
      h('div', { class: 'two' },
        h('div', {}, h('h3', {}, 'Why it fired'),
          h('ul', { class: 'evidence' }, describeEvidence(a.evidence, typeOf[a.asset]).map((s) => h('li', {}, s))),
          h('ul', { class: 'muted small' }, history.map((s) => h('li', {}, s))), explain(a), actions(a)),
        chart)));
  }

  // Ask the cloud to recompute the rule on the stored samples: does the data still say the same?
  function explain(a) {
    const out = h('span', { class: 'small', id: `explain-${a.id}` });
    const run = async (e) => {
      e.stopPropagation();
      try {
        const x = await api(`/api/v1/alerts/${a.id}/explain`, { signal });
        out.textContent = !x.recomputable ? `Cannot be recomputed: ${x.reason}.`
          : x.matches ? 'Recomputed from the stored samples: the data confirms it.'
            : 'Recomputed from the stored samples: the data does NOT give the same evidence.';
        out.className = `small ${x.recomputable && !x.matches ? 'msg-error' : ''}`;
      } catch (err) {
        out.textContent = err.status === 404 ? 'This server cannot recompute alerts.' : err.message;
      }
    };
    return h('p', {}, h('button', { type: 'button', class: 'small', onclick: run }, 'Check against stored data'), ' ', out);
  }

  function actions(a) {
    if (!canOperate() || a.state === 'resolved') return null;
    const note = h('input', { class: 'note', placeholder: 'note (optional)', onclick: (e) => e.stopPropagation() });
    const error = h('span', { class: 'msg-error small' });
    const act = (verb) => async (e) => {
      e.stopPropagation();
      e.target.disabled = true;
      try {
        const updated = await api(`/api/v1/alerts/${a.id}/${verb}`, { method: 'POST', body: { note: note.value }, signal });
        alerts = alerts.map((x) => (x.id === a.id ? updated : x));
        render();
      } catch (err) {
        error.textContent = err.message;
        e.target.disabled = false;
      }
    };
    return h('div', { class: 'actions' }, note,
      a.state === 'open' ? h('button', { type: 'button', class: 'primary', dataset: { action: 'ack' }, onclick: act('ack') }, 'Acknowledge') : null,
      h('button', { type: 'button', dataset: { action: 'resolve' }, onclick: act('resolve') }, 'Resolve'), error);
  }

  const select = (key, values, label) => h('select', { id: `alerts-${key}`, onchange: (e) => { filters[key] = e.target.value; load(); } },
    values.map((v) => h('option', { value: v, selected: v === filters[key] }, v || label)));
  const text = (key) => h('input', { id: `alerts-${key}`, type: 'search', placeholder: key, value: filters[key],
    onchange: (e) => { filters[key] = e.target.value.trim(); load(); } });
  root.append(h('h1', {}, 'Alerts'),
    h('div', { class: 'toolbar' }, select('state', STATES, 'any state'), select('severity', SEVERITIES, 'any severity'),
      text('asset'), text('rule'), status),
    h('table', { class: 'grid alerts', id: 'alerts-table' },
      h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', {}, c)))), tbody), more);

  await load();
  if (openId) {
    const id = Number(openId);
    if (!alerts.some((a) => a.id === id)) alerts.unshift(await api(`/api/v1/alerts/${id}`, { signal }));
    toggle(id);
  }
  const timer = setInterval(() => { if (!openDetail) load(); }, 20000);
  signal.addEventListener('abort', () => { clearInterval(timer); openDetail?.ctl.abort(); });
}
