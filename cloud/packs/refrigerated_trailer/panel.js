// The refrigerated trailer's panel: its what-if questions (the thermal twin: cloud/packs/refrigerated_trailer)
// and a cold-chain card — the product air against the limit the gateway alarms on, the door, the compressor.

import { fmtAgo, fmtValue, h } from '../../js/dom.js';

const limitOf = (type) => (type.local_rules || []).find((r) => r.point === 'supply_air' && r.above != null)?.above ?? 8;

export function whatIf(type) {
  return [
    { name: 'horizon_h', label: 'Horizon', options: [1, 2, 6, 12, 24].map((n) => [n, `${n} h`]), value: 6 },
    { name: 'setpoint_c', label: 'Setpoint °C', placeholder: 'as now', step: 0.5 },
    { name: 'door_open_min', label: 'Door open (min)', value: 0, min: 0 },
    { name: 'ambient_offset_c', label: 'Ambient ± °C', value: 0, step: 0.5 },
    { name: 'compressor_off', label: 'Compressor off', checkbox: true },
    { name: 'limit_c', label: 'Limit °C', step: 0.5, value: limitOf(type) },
  ];
}

// What "Apply" under an answer changes on the trailer: the setpoint the question tried (the other conditions —
// a door, the ambient, a failed compressor — are not the operator's to set).
export function applyOf(answer) {
  const sp = answer?.scenario?.setpoint_c;
  return sp == null ? null : { desired: { setpoint: sp }, label: `setpoint ${fmtValue(sp, 'degC')}` };
}

export function render(box, { twin, type }) {
  const now = (p) => twin.reported.points[p] || {};
  const supply = now('supply_air');
  const limit = limitOf(type);
  const margin = supply.value == null ? null : limit - supply.value;
  const current = now('compressor_current').value;
  box.replaceChildren(h('h2', {}, 'Cold chain'), h('ul', { class: 'facts', id: 'pack-facts' },
    h('li', {}, `Supply air ${fmtValue(supply.value, 'degC')} (${fmtAgo(supply.t_ns)}), limit ${fmtValue(limit, 'degC')}` +
      (margin == null ? '.' : margin > 0 ? `: ${fmtValue(margin, 'degC')} of margin.` : ': above the limit.')),
    h('li', {}, `Setpoint ${fmtValue(now('setpoint').value, 'degC')}, door ${fmtValue(now('door').value, 'bool')}.`),
    h('li', {}, current == null ? 'Compressor: no reading.' : `Compressor ${current >= 1 ? 'running' : 'off'} (${fmtValue(current, 'A')}).`)));
}
