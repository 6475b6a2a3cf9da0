// The rotating machine's panel: its what-if question (postponing maintenance against the vibration trend:
// cloud/packs/rotating_machine) and an ISO 10816-3 card — the zone of the broadband velocity now.

import { fmtAgo, fmtValue, h } from '../../js/dom.js';

// Group 2 (15-300 kW), rigid foundation, mm/s RMS: the limits the pack's rules apply by default.
const ZONES = [[1.4, 'A', 'newly commissioned'], [2.8, 'B', 'unrestricted long-term operation'],
  [4.5, 'C', 'restricted: plan maintenance'], [Infinity, 'D', 'damage likely: act now']];

export function whatIf() {
  return [{ name: 'postpone_days', label: 'Postpone maintenance (days)', value: 7, min: 0 }];
}

export function render(box, { twin }) {
  const vib = twin.reported.points.vib_velocity_rms || {};
  const zone = vib.value == null ? null : ZONES.find(([limit]) => vib.value < limit);
  const bearing = twin.reported.points.bearing_temp || {};
  box.replaceChildren(h('h2', {}, 'Vibration severity'), h('ul', { class: 'facts', id: 'pack-facts' },
    h('li', {}, zone ? `Zone ${zone[1]} (${fmtValue(vib.value, 'mm/s')}, ${fmtAgo(vib.t_ns)}): ${zone[2]}.`
      : 'No vibration reading yet.'),
    h('li', {}, `Bearing ${fmtValue(bearing.value, 'degC')}.`),
    h('li', { class: 'muted' }, 'ISO 10816-3 group 2, rigid: A/B 1.4, B/C 2.8, C/D 4.5 mm/s.')));
}
