// The rotating machine's panel: its what-if question (postponing maintenance against the vibration trend:
// cloud/packs/rotating_machine), the ISO 20816 zone of its own class with the predicted dates of crossing into
// C and D (the twin's model.zone_trend, which the pack's rule keeps), its bearing's envelope energies, and the
// newest raw-waveform snapshot its gateway uploaded as a spectrum and an envelope spectrum with the defect lines.

import { api } from '../../js/api.js';
import { fmtAgo, fmtTime, fmtValue, h } from '../../js/dom.js';
import { timeChart } from '../../js/charts.js';

const MEANING = { A: 'newly commissioned', B: 'unrestricted long-term operation', C: 'restricted: plan maintenance',
  D: 'damage likely: act now' };
const LINE_COLORS = { bpfo: '#dc2626', bpfi: '#7c3aed', bsf: '#059669', ftf: '#d97706' };
const kept = new WeakMap(); // box -> {id, el, charts}: the snapshot's charts survive the panel's refreshes

export function whatIf() {
  return [{ name: 'postpone_days', label: 'Postpone maintenance (days)', value: 7, min: 0 }];
}

function when(c) {
  if (!c || c.at_ns == null) return 'not reached on the present trend';
  const [lo, hi] = c.interval_ns || [];
  const range = lo != null ? ` (90 %: ${fmtTime(lo)} – ${hi != null ? fmtTime(hi) : 'never'})` : '';
  return `${fmtTime(c.at_ns)}${range}`;
}

function zoneFacts(twin) {
  const vib = twin.reported.points.vib_velocity_rms || {};
  const z = (twin.model || {}).zone_trend;
  if (!z) {
    return [h('li', {}, vib.value == null ? 'No vibration reading yet.'
      : `${fmtValue(vib.value, 'mm/s')} (${fmtAgo(vib.t_ns)}); no zone trend yet.`)];
  }
  const lim = z.zone_limits_mm_s;
  const out = [h('li', { id: 'zone-now' }, `Zone ${z.zone} (${fmtValue(z.level_mm_s, 'mm/s')} on the trend, as of ` +
    `${fmtTime(z.now_ns)}): ${MEANING[z.zone] || ''}.`)];
  if (z.zone < 'C') out.push(h('li', { id: 'zone-c-date' }, `Zone C (${lim['B/C']} mm/s): ${when(z.zone_c)}.`));
  if (z.zone < 'D') out.push(h('li', { id: 'zone-d-date' }, `Zone D (${lim['C/D']} mm/s): ${when(z.zone_d)}.`));
  out.push(h('li', { class: 'muted' }, `ISO 20816-3 group ${z.group}, ${z.foundation}: A/B ${lim['A/B']}, ` +
    `B/C ${lim['B/C']}, C/D ${lim['C/D']} mm/s.`));
  return out;
}

function spectrumChart(el, data, unit, lines) {
  const chart = timeChart(el, { series: [{ label: 'amplitude', unit }], time: false, height: 150,
    markers: () => ({ lines: lines.map(([at, color]) => ({ at, color })) }) });
  chart.set([data.f_hz, data.mag], null);
  return chart;
}

async function snapshotView(box, twin, signal) {
  const { items } = await api(`/api/v1/assets/${encodeURIComponent(twin.asset)}/snapshots?limit=1`, { signal });
  if (!items.length) return null;
  const have = kept.get(box);
  if (have?.id === items[0].id) return have.el;
  have?.charts.forEach((c) => c.destroy());
  const s = await api(`/api/v1/assets/${encodeURIComponent(twin.asset)}/snapshots/${items[0].id}`, { signal });
  const lines = Object.entries(s.lines_hz).flatMap(([k, f]) => [1, 2, 3].map((n) => [n * f, LINE_COLORS[k]]));
  const specEl = h('div', { class: 'chart', id: 'snapshot-spectrum' });
  const envEl = h('div', { class: 'chart', id: 'snapshot-envelope', dataset: { peakHz: '' } });
  const el = h('div', { id: 'snapshot', dataset: { snapshot: String(s.id) } },
    h('h3', {}, `Waveform snapshot ${fmtTime(s.block_t0_ns)}`),
    h('p', { class: 'muted small' }, `${s.reason}; ${s.blocks} blocks of ${s.channels} channels at ` +
      `${s.sample_rate_hz / 1000} kHz; channel ${s.channel + 1}, block ${s.block + 1}. Lines: ` +
      Object.entries(s.lines_hz).map(([k, f]) => `${k.toUpperCase()} ${f.toFixed(1)} Hz`).join(', ') + '.'),
    h('h4', {}, 'Spectrum'), specEl,
    h('h4', {}, `Envelope spectrum (band ${Math.round(s.envelope.band_hz[0])}–${Math.round(s.envelope.band_hz[1])} Hz)`),
    envEl);
  box.append(el); // charts need a laid-out container to size themselves
  const env = s.envelope;
  envEl.dataset.peakHz = String(env.f_hz[env.mag.indexOf(Math.max(...env.mag.slice(1)))]);
  const charts = [spectrumChart(specEl, s.spectrum, 'm/s²', []), spectrumChart(envEl, env, '(m/s²)²', lines)];
  kept.set(box, { id: s.id, el, charts });
  return el;
}

export function render(box, { twin, signal }) {
  const p = (name) => twin.reported.points[name] || {};
  const env = ['bpfo', 'bpfi', 'bsf', 'ftf'].map((k) => [k, p(`vib_env_${k}`).value]).filter(([, v]) => v != null);
  const facts = [...zoneFacts(twin), h('li', {}, `Bearing ${fmtValue(p('bearing_temp').value, 'degC')}` +
    (env.length ? `; envelope energy ${env.map(([k, v]) => `${k.toUpperCase()} ${Math.round(100 * v)} %`).join(', ')}`
      : '') + '.')];
  const have = kept.get(box);
  box.replaceChildren(h('h2', {}, 'Vibration severity'), h('ul', { class: 'facts', id: 'pack-facts' }, ...facts),
    ...(have ? [have.el] : []));
  snapshotView(box, twin, signal).then((el) => { if (el && !box.contains(el)) box.append(el); })
    .catch(() => { /* no snapshot view this time; the facts stand */ });
}
