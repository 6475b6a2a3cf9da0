// "Apply" under a what-if's answer: the change the pack reads from the question (its panel's applyOf) becomes the
// asset's desired state (PUT /api/v1/twins/{id}/desired) with the forecast as evidence, which the audit trail keeps
// beside the change and the set commands it sends. A change that takes the load in custody outside its profile
// comes back as a 422 naming `confirm`: the operator sees why and confirms here (a step on the page, not a
// browser dialog), and it is sent again confirmed. Then each command's lifecycle, as it moves: live on the
// WebSocket, and read again every few seconds in case a message was missed.

import { ApiError, api, live, request } from './api.js';
import { h, message } from './dom.js';

const TERMINAL = new Set(['succeeded', 'failed', 'expired']);
const POLL_MS = 2000;

export function applyBox({ path, change, evidence, signal }) {
  const assetId = decodeURIComponent(path);
  const box = h('div', { id: 'whatif-apply', class: 'edit', dataset: { state: 'ready' } });
  const reason = h('input', { id: 'whatif-apply-reason', value: 'applied from the what-if',
    placeholder: 'reason (kept in the audit trail)' });
  const status = h('div', { id: 'whatif-apply-status' });
  const state = (s, ...content) => {
    box.dataset.state = s;
    status.replaceChildren(...content);
  };

  const send = async (confirm) => {
    run.disabled = true;  // one change per click; enabled again when it did not go through
    state('sending', h('p', { class: 'muted' }, confirm ? 'Sending, confirmed…' : 'Sending…'));
    let sent;
    try {
      for (let attempt = 0; ; attempt += 1) {  // someone else's change in between: read again and merge again
        const { data: twin, etag } = await request(`/api/v1/twins/${path}`, { signal });
        const body = { desired: { ...twin.desired, ...change.desired }, reason: reason.value, evidence, confirm };
        try {
          sent = await api(`/api/v1/twins/${path}/desired`, { method: 'PUT', body, headers: { 'If-Match': etag }, signal });
          break;
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 412 && attempt < 2)) throw err;
        }
      }
    } catch (err) {
      run.disabled = false;
      const needs = err instanceof ApiError && err.status === 422
        && (err.data?.errors || []).find((e) => e.where === 'body.confirm');
      if (needs && !confirm) return askConfirmation(needs.msg);
      return state('error', message(`Not applied: ${needs?.msg || err.message}`, 'error'));
    }
    follow(sent.commands || []);
  };

  const askConfirmation = (why) => state('confirm',
    message(`This change needs your confirmation: ${why}`, 'warn'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', id: 'whatif-apply-confirm', onclick: () => send(true) },
        'Confirm and apply'),
      h('button', { type: 'button', id: 'whatif-apply-cancel', onclick: () => state('ready') }, 'Cancel')));

  const follow = (commands) => {
    if (!commands.length) {
      return state('succeeded', message('Desired state stored; the device already reports it.', 'ok'));
    }
    const seen = new Map(commands.map((c) => [c.id, [c.state]]));
    const last = new Map(commands.map((c) => [c.id, c]));
    const items = h('ul', { class: 'facts', id: 'whatif-apply-commands' });
    const stop = new AbortController();
    signal.addEventListener('abort', () => stop.abort());
    const render = () => {
      items.replaceChildren(...[...last.values()].map((c) => h('li', { dataset: { command: c.id, state: c.state } },
        `${c.args.property} → ${c.args.value}: ${seen.get(c.id).join(' → ')}${c.reason ? ` (${c.reason})` : ''}`)));
      const states = [...last.values()].map((c) => c.state);
      if (states.every((s) => TERMINAL.has(s))) {
        stop.abort();
        box.dataset.state = states.find((s) => s !== 'succeeded') || 'succeeded';
      } else {
        box.dataset.state = states.includes('delivered') ? 'delivered' : 'pending';
      }
    };
    const update = (c) => {
      if (!seen.has(c.id)) return;
      const path_ = seen.get(c.id);
      if (path_[path_.length - 1] !== c.state) path_.push(c.state);
      last.set(c.id, c);
      render();
    };
    status.replaceChildren(message('Desired state stored and sent to the device:', 'ok'), items);
    render();
    live([assetId], (m) => m.type === 'command' && update(m.command), stop.signal);
    const poll = async () => {
      while (!stop.signal.aborted) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        for (const [id, c] of last) {
          if (stop.signal.aborted || TERMINAL.has(c.state)) continue;
          try {
            update(await api(`/api/v1/assets/${path}/commands/${encodeURIComponent(id)}`, { signal: stop.signal }));
          } catch { /* the next round tries again */ }
        }
      }
    };
    poll();
  };

  const run = h('button', { type: 'button', class: 'primary', id: 'whatif-apply-run', onclick: () => send(false) },
    'Apply');
  box.append(h('p', {}, `Apply to the asset: ${change.label}. The forecast is kept as evidence in the audit trail.`),
    reason, run, status);
  return box;
}
