// The turbofan's panel: the flight condition of the last cycle. No what-if and no cloud rules yet
// (remaining-useful-life rules are another issue: cloud/packs/turbofan/README.md).

import { fmtAgo, h } from '../../js/dom.js';

export function render(box, { twin }) {
  const p = (name) => twin.reported.points[name] || {};
  const v = (name, digits) => (p(name).value == null ? '—' : Number(p(name).value).toFixed(digits));
  box.replaceChildren(h('h2', {}, 'Engine'), h('ul', { class: 'facts', id: 'pack-facts' },
    h('li', {}, `Last cycle ${fmtAgo(p('s_2').t_ns)}: altitude ${v('setting_1', 1)} kft, Mach ${v('setting_2', 2)}, ` +
      `TRA ${v('setting_3', 0)} %.`),
    h('li', { class: 'muted' }, 'No cloud rules yet: the edge watches the degrading sensors with CUSUM.')));
}
