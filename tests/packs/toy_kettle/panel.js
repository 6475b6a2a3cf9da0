// The toy kettle's panel (tests/packs/toy_kettle): the water now, and its what-if question.

import { fmtValue, h } from '../../js/dom.js';

export function whatIf() {
  return [{ name: 'minutes', label: 'Minutes from now', value: 10, min: 1 }];
}

export function render(box, { twin }) {
  const water = twin.reported.points.water_c || {};
  box.replaceChildren(h('h2', {}, 'Kettle'), h('p', { id: 'toy-kettle-water' }, `Water ${fmtValue(water.value, 'degC')}`));
}
