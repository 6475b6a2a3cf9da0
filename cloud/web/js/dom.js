// DOM building and formatting shared by the views. Text always goes in as text nodes, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  return fill(el, children, true);
}

// Replace (or append to) an element's children; null and false are skipped, so `cond ? x : null` works.
export function fill(el, children, append = false) {
  const kids = [children].flat(Infinity).filter((c) => c != null && c !== false);
  if (append) el.append(...kids);
  else el.replaceChildren(...kids);
  return el;
}

export const NS = 1e9;
export const nowNs = () => Date.now() * 1e6;

export function fmtTime(ns) {
  if (ns == null) return '—';
  const d = new Date(ns / 1e6);
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

export function fmtDuration(s) {
  s = Math.abs(s);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export const fmtAgo = (ns) => (ns == null ? 'never' : `${fmtDuration((nowNs() - ns) / NS)} ago`);

const UNITS = { degC: '°C', degF: '°F', bool: '', pct: '%', percent: '%' };
export const unitLabel = (unit) => (unit in UNITS ? UNITS[unit] : unit || '');

export function fmtValue(v, unit) {
  if (v == null || Number.isNaN(v)) return '—';
  if (typeof v !== 'number') return String(v);  // text points: an id, a state name
  if (unit === 'bool') return v >= 0.5 ? 'open' : 'closed';
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  const u = unitLabel(unit);
  return `${Number(v).toFixed(digits)}${u ? ` ${u}` : ''}`;
}

export const humanize = (key) => key.replace(/_ns$|_s$/, '').replace(/[_-]+/g, ' ');

export const badge = (text, kind = text) => h('span', { class: `badge b-${kind}` }, text);

export function healthBar(health) {
  return h('span', { class: 'health', title: `health ${health}` },
    h('meter', { min: 0, max: 1, low: 0.5, high: 0.8, optimum: 1, value: health }), ` ${Math.round(health * 100)}%`);
}

export function message(text, kind = 'info') {
  return h('p', { class: `msg msg-${kind}` }, text);
}
