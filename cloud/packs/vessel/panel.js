// The vessel's panel: its what-if question (postponing maintenance against the engine's and the shaft line's
// trends: cloud/packs/vessel) and a card an engineer reads first — load, each cylinder's exhaust against the
// mean of the cylinders, scavenge air and turbocharger, the shaft line's vibration zone, and the maintenance
// dates the rules predict (the twin's model.maintenance).

import { fmtAgo, fmtTime, fmtValue, h } from '../../js/dom.js';

const MCR_KW = 14280; // the pack's default engine (cloud/packs/vessel/config.yaml)
// ISO 10816-3 group 1 (> 300 kW), flexible foundation, mm/s RMS: the shaft line's zones in the pack's rules.
const ZONES = [[3.5, 'A'], [7.1, 'B'], [11.0, 'C'], [Infinity, 'D']];

export function whatIf() {
  return [{ name: 'postpone_days', label: 'Postpone maintenance (days)', value: 14, min: 0 }];
}

export function render(box, { twin }) {
  const p = (name) => twin.reported.points[name] || {};
  const cylinders = Object.keys(twin.reported.points).filter((k) => /^me_exh_temp_cyl\d+$/.test(k)).sort();
  const temps = cylinders.map((k) => p(k).value).filter((v) => v != null);
  const mean = temps.length ? temps.reduce((a, b) => a + b, 0) / temps.length : null;
  const power = p('me_shaft_power').value;
  const running = (p('me_speed').value || 0) > 1;
  const facts = [
    h('li', {}, running
      ? `Main engine ${fmtValue(p('me_speed').value, 'rpm')}, ${fmtValue(power, 'kW')} (${Math.round(100 * power / MCR_KW)} % MCR), ` +
        `${fmtValue(p('ship_speed').value, 'kn')} (${fmtAgo(p('me_speed').t_ns)}).`
      : `Main engine stopped (${fmtAgo(p('me_speed').t_ns)}).`),
  ];
  if (running && mean != null) {
    facts.push(h('li', {}, 'Exhaust after the valves: ' + cylinders.map((k, i) => {
      const v = p(k).value;
      return v == null ? `${i + 1}: —` : `${i + 1}: ${Math.round(v)} (${v - mean >= 0 ? '+' : ''}${Math.round(v - mean)})`;
    }).join(', ') + ` °C; mean ${Math.round(mean)} °C.`));
    facts.push(h('li', {}, `Scavenge air ${fmtValue(p('me_scav_air_pressure').value, 'bar')}, turbocharger ` +
      `${fmtValue(p('me_tc_speed').value, 'rpm')}, fuel index ${fmtValue(p('me_fuel_index').value, '%')}.`));
  }
  for (const b of [1, 2]) {
    const v = p(`shaft_vib_${b}`).value;
    if (v == null) continue;
    const zone = ZONES.find(([limit]) => v < limit)[1];
    facts.push(h('li', {}, `Shaft bearing ${b}: ${fmtValue(v, 'mm/s')} (zone ${zone}), ` +
      `${fmtValue(p(`shaft_bearing_${b}_temp`).value, 'degC')}.`));
  }
  const due = Object.values((twin.model || {}).maintenance || {}).sort((a, b) => a.at_ns - b.at_ns);
  facts.push(due.length
    ? h('li', {}, 'Predicted maintenance: ' + due.map((d) => `${d.what} by ${fmtTime(d.at_ns)}`).join('; ') + '.')
    : h('li', { class: 'muted' }, 'No maintenance predicted from the trends yet.'));
  box.replaceChildren(h('h2', {}, 'Engine and shaft line'), h('ul', { class: 'facts', id: 'pack-facts' }, ...facts));
}
