// What-if: ask the twin's calibrated model what would happen under other conditions (POST
// /api/v1/assets/{id}/simulate; nothing is sent to the asset until an operator applies it: apply.js) and draw
// the answer. The questions are the asset's pack's (its panel's whatIf(type): cloud/packs/<kind>/panel.js); a
// kind with none says so, and a server without the route says so too.
//
// The answer is read leniently: every numeric array as long as a "t_ns" array beside it is a series
// (supply_c, cargo_c, ...; *_lo / *_hi drawn dashed), "limit_c" a limit line, other scalars facts.

import { ApiError, api } from './api.js';
import { applyBox } from './apply.js';
import { COLORS, timeChart } from './charts.js';
import { NS, fmtDuration, fmtTime, fmtValue, h, humanize, message } from './dom.js';

const UNAVAILABLE = new Set([404, 405, 501]);

function forecastSeries(answer) {
  const out = [];
  const isSeries = (a, t) => Array.isArray(a) && a.length === t.length && a.every((x) => x == null || typeof x === 'number');
  const walk = (obj, label, tShared) => {
    const t = Array.isArray(obj.t_ns) ? obj.t_ns : tShared;
    for (const [k, v] of Object.entries(obj)) {
      if (k === 't_ns' || v == null || typeof v !== 'object') continue;
      const name = k === 'values' ? label || 'value' : [label, k].filter(Boolean).join(' ');
      if (t && isSeries(v, t)) out.push({ label: humanize(name.replace(/_c$/, '')), unit: /_c$/.test(k) ? 'degC' : undefined, t, v });
      else if (Array.isArray(v)) v.forEach((item) => item && typeof item === 'object' && walk(item, item.point || item.name || name, t));
      else walk(v, name, t);
    }
  };
  walk(answer, '', null);
  return out;
}

function summary(a) {
  if (!('time_to_excursion_s' in a)) {
    return Object.entries(a).filter(([k, v]) => v != null && typeof v !== 'object' && k !== 't_ns').map(([k, v]) =>
      `${humanize(k)}: ${k.endsWith('_ns') ? fmtTime(v) : k.endsWith('_s') ? fmtDuration(v) : typeof v === 'number' ? +v.toFixed(3) : v}`);
  }
  const limit = fmtValue(a.limit_c, 'degC');
  const horizon = fmtDuration(a.horizon_s);
  const when = (s) => (s == null ? `stays below ${limit} for the whole ${horizon}` : `passes ${limit} in ${fmtDuration(s)}`);
  const out = [`With these changes the supply air ${when(a.time_to_excursion_s)}` +
    (a.time_to_excursion_s != null && a.earliest_s != null && a.latest_s != null
      ? ` (between ${fmtDuration(a.earliest_s)} and ${fmtDuration(a.latest_s)}).` : '.'),
  `As things are, it ${when(a.baseline_time_to_excursion_s)}.`];
  for (const w of a.model?.warnings || []) out.push(`Model warning: ${w}`);
  return out;
}

function field(f) {
  const input = f.options
    ? h('select', { name: f.name }, f.options.map(([v, l]) => h('option', { value: v, selected: v === f.value }, l)))
    : h('input', { name: f.name, type: f.checkbox ? 'checkbox' : 'number', value: f.value, step: f.step ?? 'any',
      min: f.min, placeholder: f.placeholder });
  return h('label', { class: f.checkbox ? 'check' : '' }, f.checkbox ? [input, ` ${f.label}`] : [f.label, input]);
}

// applyOf(answer): the change an answer's question would make to the asset (the pack's panel says; null: none),
// offered as "Apply" under the answer (apply.js) to people who may operate.
export function renderWhatIf(box, { path, fields, signal, applyOf }) {
  if (!fields) {
    box.dataset.outcome = 'none';
    box.replaceChildren(h('h2', {}, 'What if…'), h('p', { class: 'muted' }, 'This kind of asset has no what-if model.'));
    return;
  }
  const out = h('div', { id: 'whatif-result' });
  let chart = null;
  signal.addEventListener('abort', () => chart?.destroy());

  const done = (outcome, ...content) => {
    box.dataset.outcome = outcome;
    out.replaceChildren(...content);
  };
  const run = async (e) => {
    e.preventDefault();
    const body = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === 'checkbox') body[el.name] = el.checked;
      else if (el.value !== '') body[el.name] = Number(el.value);
    }
    done('running', h('p', { class: 'muted' }, 'Simulating…'));
    let answer;
    try {
      answer = await api(`/api/v1/assets/${path}/simulate`, { method: 'POST', body, signal });
    } catch (err) {
      if (err instanceof ApiError && UNAVAILABLE.has(err.status)) {
        form.querySelector('button').disabled = true;
        done('unavailable', message('What-if simulation is not available on this server yet.', 'info'));
      } else {
        done('error', message(`The model could not answer: ${err.message}`, 'error'));
      }
      return;
    }
    const series = forecastSeries(answer);
    const chartEl = h('div', { class: 'chart', id: 'whatif-chart' });
    const change = applyOf?.(answer);
    done('answer', h('ul', { class: 'facts' }, summary(answer).map((f) => h('li', {}, f))),
      series.length ? chartEl : h('p', { class: 'muted' }, 'The answer has no time series to draw.'),
      change ? applyBox({ path, change, evidence: answer.evidence ?? {}, signal }) : null);
    chart?.destroy();
    chart = null;
    if (!series.length) return;
    const data = uPlot.join(series.map((s) => [s.t.map((t) => t / NS), s.v]));
    const limits = answer.limit_c != null ? [{ value: answer.limit_c, color: 'rgba(220,38,38,0.6)' }] : [];
    const bases = [...new Set(series.map((s) => s.label.replace(/ (lo|hi)$/, '')))];  // a band shares its line's colour
    chart = timeChart(chartEl, { height: 240, markers: () => ({ limits }), series: series.map((s) => {
      const base = s.label.replace(/ (lo|hi)$/, '');
      return { label: s.label, unit: s.unit, color: COLORS[bases.indexOf(base) % COLORS.length], dash: base !== s.label ? [4, 4] : undefined };
    }) });
    chart.set(data, null);
    chartEl.dataset.points = String(data[0].length);
  };
  const form = h('form', { class: 'whatif', onsubmit: run }, h('div', { class: 'fields' }, fields.map(field)),
    h('button', { type: 'submit', class: 'primary', id: 'whatif-run' }, 'Run what-if'));
  box.replaceChildren(h('h2', {}, 'What if…'),
    h('p', { class: 'muted small' }, 'Ask the twin\'s calibrated model what would happen under other conditions; nothing is sent to the asset unless you apply it.'),
    form, out);
}
