// The dashboard shell: login with an API key, a hash router (#/fleet, #/asset/ID, #/alerts,
// #/shipments), and the top bar. Each view gets an AbortSignal that fires when the user leaves it.
// Only the fleet view (the first page of most sessions) is imported up front; the other views, and the
// charts they draw, are imported when first opened, and fetched once the first page is shown.

import { ApiError, login, logout, session } from './api.js';
import { h, message } from './dom.js';
import { renderFleet } from './fleet.js';

const later = {
  asset: () => import('./asset.js').then((m) => m.renderAsset),
  alerts: () => import('./alerts.js').then((m) => m.renderAlerts),
  shipments: () => import('./shipments.js').then((m) => m.renderShipments),
};
const views = { fleet: async () => renderFleet, ...later };
let fetchedViews = false;
const fetchViews = () => {
  if (fetchedViews) return;
  fetchedViews = true;
  for (const load of Object.values(later)) load().catch(() => {});  // a failure shows when the view is opened
};
const main = document.getElementById('main');
let leave = null;

function renderLogin(root, next) {
  const input = h('input', { type: 'password', id: 'api-key', name: 'api-key', autocomplete: 'off', required: true,
    placeholder: 'API key', 'aria-label': 'API key' });
  const error = h('p', { class: 'msg msg-error', id: 'login-error', hidden: true });
  const submit = async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      await login(input.value.trim());
      location.hash = next && next !== '#/login' ? next : '#/fleet';
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? 'That key is unknown or revoked.' : `Could not sign in: ${err.message}`;
      error.hidden = false;
    }
  };
  root.append(h('form', { class: 'login card', id: 'login', onsubmit: submit },
    h('h1', {}, 'assettwin'),
    h('p', { class: 'muted' }, 'Sign in with an API key (twin cloud keys create …). It is kept for this tab only.'),
    input, h('button', { type: 'submit', class: 'primary' }, 'Sign in'), error));
  input.focus();
}

function showTop() {
  const top = document.getElementById('top');
  top.hidden = !session.me;
  if (!session.me) return;
  const { tenant, role, name } = session.me;
  document.getElementById('who').textContent = `${name || 'key'} · ${tenant} · ${role}`;
  document.body.dataset.role = role;
  const current = location.hash.split('/')[1] || 'fleet';
  for (const a of top.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === current || (current === 'asset' && a.dataset.nav === 'fleet'));
  }
}

async function route() {
  leave?.abort();
  leave = new AbortController();
  const { signal } = leave;
  if (!session.me && session.key) {
    try {
      await login(session.key);
    } catch {
      logout();
    }
  }
  if (signal.aborted) return;
  main.replaceChildren();
  if (!session.me) {
    showTop();
    const next = location.hash;
    if (next !== '#/login') history.replaceState(null, '', '#/login');
    renderLogin(main, next);
    return;
  }
  const [name, ...args] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (!views[name]) {
    location.replace('#/fleet');
    return;
  }
  showTop();
  try {
    const render = await views[name]();
    if (signal.aborted) return;
    await render(main, signal, ...args);
  } catch (err) {
    if (!signal.aborted) main.append(message(`Could not load this page: ${err.message}`, 'error'));
  }
  setTimeout(fetchViews, 0);
}

document.getElementById('logout').addEventListener('click', () => logout());
window.addEventListener('hashchange', route);
route();
