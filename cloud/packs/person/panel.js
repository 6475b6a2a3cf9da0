// The person's panel: the ambulatory glucose profile (5/25/50/75/95th percentiles by time of day over 14 days)
// and today's glucose with the 30-minute forecast band, from POST /api/v1/people/{id}/report (consented and
// audited: the page states why it reads). The consensus metrics beside them. Display in mg/dL or mmol/L.
// It shows glucose and forecasts; it never suggests a dose.

import { api } from '../../js/api.js';
import { h } from '../../js/dom.js';

const W = 640;
const H = 200;
const LO = 40;
const HI = 400;
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

const y = (g) => H - ((Math.min(HI, Math.max(LO, g)) - LO) / (HI - LO)) * H;

function path(xs, ys) {
  let d = '';
  let pen = false;
  xs.forEach((x, i) => {
    if (ys[i] == null) { pen = false; return; }
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y(ys[i]).toFixed(1)}`;
    pen = true;
  });
  return d;
}

function band(xs, lo, hi) {
  const pts = xs.map((x, i) => [x, lo[i], hi[i]]).filter((p) => p[1] != null && p[2] != null);
  if (!pts.length) return '';
  return 'M' + pts.map((p) => `${p[0].toFixed(1)},${y(p[2]).toFixed(1)}`).join('L') +
    'L' + pts.reverse().map((p) => `${p[0].toFixed(1)},${y(p[1]).toFixed(1)}`).join('L') + 'Z';
}

function frame(id, title) {
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', id, role: 'img', 'aria-label': title });
  s.append(svg('rect', { x: 0, y: y(180), width: W, height: y(70) - y(180), fill: '#dcfce7', class: 'target-range' }));
  for (const g of [54, 70, 180, 250]) {
    s.append(svg('line', { x1: 0, x2: W, y1: y(g), y2: y(g), stroke: '#94a3b8', 'stroke-dasharray': '3 3' }));
  }
  return s;
}

export function agpChart(agp) {
  const s = frame('agp-chart', 'Ambulatory glucose profile');
  const xs = agp.minute_of_day.map((m) => (m / 1440) * W);
  const p = agp.percentiles;
  s.append(svg('path', { d: band(xs, p['5'], p['95']), fill: '#bfdbfe', class: 'agp-5-95' }));
  s.append(svg('path', { d: band(xs, p['25'], p['75']), fill: '#60a5fa', class: 'agp-25-75' }));
  s.append(svg('path', { d: path(xs, p['50']), stroke: '#1e3a8a', fill: 'none', 'stroke-width': 2, class: 'agp-median' }));
  return s;
}

export function todayChart(today, forecast, midnightNs) {
  const s = frame('today-chart', "Today's glucose and the 30-minute forecast");
  const x = (t) => ((t - midnightNs) / 86400e9) * W;
  s.append(svg('path', { d: band(forecast.t_ns.map(x), forecast.low, forecast.high), fill: '#fde68a',
    class: 'forecast-band' }));
  s.append(svg('path', { d: path(forecast.t_ns.map(x), forecast.value), stroke: '#d97706', fill: 'none',
    'stroke-dasharray': '4 2', class: 'forecast-line' }));
  s.append(svg('path', { d: path(today.t_ns.map(x), today.glucose), stroke: '#111827', fill: 'none',
    'stroke-width': 2, class: 'glucose-line' }));
  return s;
}

const pct = (v) => (v == null ? '—' : `${v.toFixed(1)} %`);

export async function render(box, { twin, signal }) {
  const mmol = localStorage.getItem('glucose-unit') === 'mmol/L';
  box.replaceChildren(h('h2', {}, 'Glucose'), h('p', { class: 'muted' }, 'Loading the report…'));
  let r;
  try {
    r = await api(`/api/v1/people/${encodeURIComponent(twin.asset)}/report`, {
      method: 'POST', signal, body: { reason: 'dashboard: the person\'s glucose page', days: 14 } });
  } catch (e) {
    box.replaceChildren(h('h2', {}, 'Glucose'), h('p', { class: 'muted', id: 'person-denied' }, e.message));
    return;
  }
  const fmt = (g) => (g == null ? '—' : mmol ? `${(g / r.mgdl_per_mmoll).toFixed(1)} mmol/L` : `${Math.round(g)} mg/dL`);
  const m = r.metrics.overall;
  const next = r.forecast.next;
  const midnight = r.today.t_ns.length ? r.today.t_ns[0] : Date.now() * 1e6;
  const facts = [
    h('li', {}, `Time in range 70–180: ${pct(m.tir_pct)}; below 70: ${pct(m.tbr70_pct)} (below 54: ${pct(m.tbr54_pct)}); ` +
      `above 180: ${pct(m.tar180_pct)} (above 250: ${pct(m.tar250_pct)}).`),
    h('li', {}, `Mean ${fmt(m.mean_mgdl)}, GMI ${m.gmi_pct == null ? '—' : m.gmi_pct.toFixed(1) + ' %'}, ` +
      `CV ${pct(m.cv_pct)}, data sufficiency ${pct(m.sufficiency_pct)}.`),
    h('li', { id: 'forecast-next' }, next ? `In 30 minutes: ${fmt(next.value)} (${fmt(next.low)}–${fmt(next.high)}).`
      : 'No forecast yet.'),
  ];
  const unit = h('button', { type: 'button', id: 'glucose-unit', onclick: () => {
    localStorage.setItem('glucose-unit', mmol ? 'mg/dL' : 'mmol/L');
    render(box, { twin, signal });
  } }, mmol ? 'Show mg/dL' : 'Show mmol/L');
  box.replaceChildren(h('h2', {}, 'Glucose'), unit, h('ul', { class: 'facts', id: 'pack-facts' }, ...facts),
    h('h3', {}, 'Ambulatory glucose profile (14 days)'), agpChart(r.agp),
    h('h3', {}, 'Today, with the 30-minute forecast band'), todayChart(r.today, r.forecast, midnight));
}
