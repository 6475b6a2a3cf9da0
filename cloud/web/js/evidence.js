// An alert's evidence (rule, point, values, limits, window) in plain words and as a chart, so an operator
// sees why it fired without reading JSON. Unknown keys are still shown, by name.

import { api } from './api.js';
import { timeChart } from './charts.js';
import { NS, fmtDuration, fmtTime, fmtValue, h, humanize, nowNs } from './dom.js';

const USED = new Set(['point', 'value', 'limit', 'threshold', 'above', 'below', 'for_s', 'values', 't_ns', 'fired_ns',
  'start_ns', 'end_ns', 'window_start_ns', 'window_end_ns', 'window', 'thresholds', 'rule', 'source', 'gateway',
  'event_id', 'detected_late', 'reading_c', 'condition', 'after_s', 'opened_at', 'closed_at', 'start', 'end']);
const EDGE_RULE = 'edge-local-rule';
const numbers = (a) => Array.isArray(a) && a.length > 0 && a.every((x) => x == null || typeof x === 'number');
const isObject = (o) => o != null && typeof o === 'object' && !Array.isArray(o);
const capital = (s) => s[0].toUpperCase() + s.slice(1);

// One shape for the evidence the rules write: flat (edge local rules: point, value, limit, for_s) or nested
// (cold chain: window {start_ns, end_ns}, values {point, reading_c, ...}, thresholds {condition, after_s, ...}).
function flatten(ev) {
  const vals = isObject(ev.values) ? ev.values : {};
  const th = isObject(ev.thresholds) ? ev.thresholds : {};
  const rule = isObject(ev.rule) ? ev.rule : {};  // the rule as the gateway applied it
  const win = isObject(ev.window) ? ev.window : {};
  const limit = ev.limit ?? ev.threshold ?? ev.above ?? ev.below ?? rule.above ?? rule.below ?? th.limit;
  const value = ev.value ?? vals.value ?? vals.reading_c;
  let dir = (ev.above ?? rule.above) != null ? 'above' : (ev.below ?? rule.below) != null ? 'below' : null;
  if (!dir && limit != null && value != null) dir = value > limit ? 'above' : 'below';
  const limits = limit != null ? [limit] : (th.condition?.match(/-?\d+(?:\.\d+)?/g) || []).map(Number);
  return { point: ev.point ?? vals.point, value, limit, limits, dir, forS: ev.for_s ?? rule.for_s ?? th.after_s,
    condition: th.condition, from: ev.window_start_ns ?? win.start_ns ?? ev.start_ns,
    to: ev.window_end_ns ?? win.end_ns ?? ev.end_ns, extra: { ...vals, ...th } };
}

function phrase(k, v) {
  const name = capital(humanize(k.replace(/_c$/, '')));
  if (typeof v === 'boolean') return `${name}: ${v ? 'yes' : 'no'}.`;
  if (typeof v === 'number' && k.endsWith('_ns')) return `${name}: ${fmtTime(v)}.`;
  if (typeof v === 'number' && k.endsWith('_s')) return `${name}: ${fmtDuration(v)}.`;
  if (typeof v === 'number' && k.endsWith('_c')) return `${name}: ${fmtValue(v, 'degC')}.`;
  if (Array.isArray(v)) return v.length ? `${name}: ${v.join(', ')}.` : null;
  if (isObject(v)) return `${name}: ${Object.entries(v).filter(([, x]) => x != null).map(([a, x]) => `${humanize(a)} ${x}`).join(', ')}.`;
  return v == null ? null : `${name}: ${v}.`;
}

export function describeEvidence(ev = {}, type) {
  const f = flatten(ev);
  const unit = type?.points?.[f.point]?.unit ?? (f.extra.reading_c != null ? 'degC' : undefined);
  const what = capital(f.point ? humanize(f.point) : 'the value');
  const held = f.forS ? ` for more than ${fmtDuration(f.forS)}` : '';
  const out = [];
  if (f.value != null && unit === 'bool') out.push(`${what} was ${fmtValue(f.value, unit)}${held}.`);
  else if (f.value != null && f.condition) out.push(`${what} read ${fmtValue(f.value, unit)}: ${f.condition}${held}.`);
  else if (f.value != null && f.limit != null) {
    out.push(`${what} was ${fmtValue(f.value, unit)}, ${f.dir} the limit of ${fmtValue(f.limit, unit)}${held}.`);
  } else if (numbers(ev.values)) {
    const vals = ev.values.filter((x) => x != null);
    out.push(`${vals.length} readings of ${what.toLowerCase()} between ${fmtValue(Math.min(...vals), unit)} and ` +
      `${fmtValue(Math.max(...vals), unit)}${f.limit != null ? `; the limit is ${fmtValue(f.limit, unit)}` : ''}.`);
  } else if (f.limit != null || f.condition) {
    out.push(`Limit: ${f.condition || fmtValue(f.limit, unit)}${held}.`);
  }
  if (f.from != null && ev.fired_ns != null && f.to == null) {
    out.push(`The condition began ${fmtTime(f.from)} and the alarm fired ${fmtTime(ev.fired_ns)}.`);
  } else {
    if (f.from != null) out.push(`Window: ${fmtTime(f.from)} to ${f.to != null ? fmtTime(f.to) : 'now'}.`);
    if (ev.fired_ns != null) out.push(`Fired at ${fmtTime(ev.fired_ns)}.`);
  }
  if (ev.source === EDGE_RULE) out.push(`Raised on gateway ${ev.gateway || '?'} by its local rule, which also works offline.`);
  else if (ev.source) out.push(`Source: ${ev.source}.`);
  if (typeof ev.rule === 'string') out.push(`Rule: ${ev.rule}.`);
  if (ev.detected_late) out.push('Detected late: the data arrived after an outage, and was judged when it came.');
  for (const [k, v] of Object.entries({ ...f.extra, ...ev })) if (!USED.has(k)) out.push(phrase(k, v));
  const words = out.filter(Boolean);
  return words.length ? words : ['No evidence recorded.'];
}

// The evidence's own values when it carries them, else the point's history around the alert.
export async function renderEvidenceChart(el, alert, type, signal) {
  const ev = alert.evidence || {};
  const f = flatten(ev);
  const unit = type?.points?.[f.point]?.unit;
  const limits = f.limits.map((value) => ({ value, color: 'rgba(220,38,38,0.7)' }));
  const lines = [alert.opened_ns, ev.fired_ns].filter((t) => t != null).map((t) => ({ at: t / NS, color: '#d97706' }));
  const bands = f.from != null ? [{ from: f.from / NS, to: (f.to ?? alert.last_seen_ns) / NS, color: 'rgba(217,119,6,0.12)' }] : [];
  let x;
  let y;
  if (numbers(ev.values)) {
    y = ev.values;
    x = numbers(ev.t_ns) && ev.t_ns.length === y.length ? ev.t_ns.map((t) => t / NS) : null;
  } else if (f.point) {
    const start = Math.min(alert.opened_ns, f.from ?? alert.opened_ns) - 2 * 3600 * NS;
    const end = Math.min(nowNs(), Math.max(alert.last_seen_ns, alert.resolved_ns ?? 0) + 1800 * NS);
    const every = `${Math.max(1, Math.round((end - start) / NS / 300))}s`;
    const s = await api(`/api/v1/assets/${encodeURIComponent(alert.asset)}/telemetry?point=${encodeURIComponent(f.point)}` +
      `&start=${start}&end=${Math.ceil(end)}&every=${every}&agg=max`, { signal });
    [x, y] = [s.t_ns.map((t) => t / NS), s.values];
  }
  if (!y?.length) {
    el.replaceChildren(h('p', { class: 'muted small' }, 'No data to chart for this evidence.'));
    return;
  }
  const series = [{ label: f.point ? humanize(f.point) : 'value', unit }];
  const chart = x
    ? timeChart(el, { series, markers: () => ({ limits, lines, bands }), height: 160 })
    : timeChart(el, { series, markers: () => ({ limits }), height: 160, time: false });
  chart.set([x || y.map((_, i) => i + 1), y], null);
  el.dataset.points = String(y.length);
  signal.addEventListener('abort', () => chart.destroy());
}
