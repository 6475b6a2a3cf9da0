// The turbofan's panel: the flight condition of the last cycle, the remaining useful life the pack estimates
// (the twin's model.rul, with its 90 % interval) and its trajectory per cycle from GET /twins/{id}/rul: the
// estimate and its interval band against the actual remaining life where the failure cycle is known, and the
// maintenance horizon the alert watches. Drawn as SVG: a few hundred cycles need no chart library.

import { api } from '../../js/api.js';
import { fmtAgo, h } from '../../js/dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 640;
const H = 220;
const PAD = { left: 44, right: 12, top: 10, bottom: 30 };

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

// The trajectory: x = cycle, y = cycles left. Exported for the page's tests and for reuse.
export function rulChart(history) {
  const pts = history.items.filter((p) => p.cycle != null && p.rul != null);
  const xMax = Math.max(1, ...pts.map((p) => p.cycle));
  const yMax = Math.max(10, ...pts.map((p) => Math.max(p.upper ?? 0, p.actual ?? 0, p.rul)), history.horizon_cycles) * 1.05;
  const x = (c) => PAD.left + (c / xMax) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (Math.max(v, 0) / yMax) * (H - PAD.top - PAD.bottom);
  const line = (key) => pts.filter((p) => p[key] != null).map((p, i) => `${i ? 'L' : 'M'}${x(p.cycle).toFixed(1)},${y(p[key]).toFixed(1)}`).join('');
  const band = pts.length
    ? pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.cycle).toFixed(1)},${y(p.upper).toFixed(1)}`).join('') +
      pts.slice().reverse().map((p) => `L${x(p.cycle).toFixed(1)},${y(p.lower).toFixed(1)}`).join('') + 'Z'
    : '';
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(f * yMax));
  const svg = s('svg', { id: 'rul-chart', viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img',
    'aria-label': 'Remaining useful life per cycle', 'data-points': pts.length },
  ...ticks.map((v) => s('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#64748b' }, String(v))),
  s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), stroke: '#94a3b8' }),
  s('text', { x: W - PAD.right, y: H - 8, 'text-anchor': 'end', 'font-size': 10, fill: '#64748b' }, `cycle ${xMax}`),
  s('path', { id: 'rul-band', d: band, fill: '#2563eb', 'fill-opacity': 0.18, stroke: 'none' }),
  s('line', { id: 'rul-horizon', x1: PAD.left, x2: W - PAD.right, y1: y(history.horizon_cycles), y2: y(history.horizon_cycles),
    stroke: '#dc2626', 'stroke-dasharray': '5 4' }),
  s('path', { id: 'rul-estimate', d: line('rul'), fill: 'none', stroke: '#2563eb', 'stroke-width': 2 }));
  if (pts.some((p) => p.actual != null)) {
    svg.append(s('path', { id: 'rul-actual', d: line('actual'), fill: 'none', stroke: '#059669', 'stroke-width': 2, 'stroke-dasharray': '2 3' }));
  }
  return svg;
}

function legend(history) {
  const swatch = (color, dash) => s('svg', { width: 18, height: 10, 'aria-hidden': 'true' },
    s('line', { x1: 0, x2: 18, y1: 5, y2: 5, stroke: color, 'stroke-width': dash ? 2 : 6, 'stroke-dasharray': dash }));
  const item = (color, dash, text) => h('span', { class: 'legend-item' }, swatch(color, dash), ` ${text} `);
  return h('p', { class: 'muted', id: 'rul-legend' }, item('#2563eb', null, 'estimate and 90 % interval'),
    history.items.some((p) => p.actual != null) ? item('#059669', '2 3', `actual (failure at cycle ${history.failure_cycle})`) : null,
    item('#dc2626', '5 4', `maintenance horizon ${history.horizon_cycles} cycles (${history.horizon_from})`));
}

export function render(box, { twin, signal }) {
  const p = (name) => twin.reported.points[name] || {};
  const v = (name, digits) => (p(name).value == null ? '—' : Number(p(name).value).toFixed(digits));
  const r = twin.model?.rul;
  const chartBox = h('div', { id: 'rul-trajectory' });
  box.replaceChildren(h('h2', {}, 'Engine'), h('ul', { class: 'facts', id: 'pack-facts' },
    h('li', {}, `Last cycle ${fmtAgo(p('s_2').t_ns)}: altitude ${v('setting_1', 1)} kft, Mach ${v('setting_2', 2)}, ` +
      `TRA ${v('setting_3', 0)} %.`),
    r
      ? h('li', { id: 'rul-now', class: r.below_horizon ? 'warn' : '' },
        `Remaining useful life at cycle ${r.cycle}: ${r.estimate.toFixed(0)} cycles ` +
        `(${Math.round(100 * r.coverage)} % interval ${r.lower.toFixed(0)}–${r.upper.toFixed(0)}); maintenance horizon ` +
        `${r.horizon_cycles} cycles${r.below_horizon ? ': reached, plan the maintenance' : ''}.`)
      : h('li', { class: 'muted' }, 'No remaining-useful-life estimate yet (the cloud needs a model: TWIN_RUL_MODEL).')),
  chartBox);
  if (!r) return;
  api(`/api/v1/twins/${encodeURIComponent(twin.asset)}/rul?limit=100000`, { signal }).then((history) => {
    chartBox.replaceChildren(rulChart(history), legend(history));
  }).catch(() => chartBox.replaceChildren(h('p', { class: 'muted' }, 'The RUL history could not be loaded.')));
}
