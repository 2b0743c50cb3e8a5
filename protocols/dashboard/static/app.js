// The dashboard shell: sign-in, navigation (hash routes) and page life cycle. Pages get the session's client
// (clients/js, served at /sdk/flowgate.js) in ctx.client.
import { Session, describe, isUnauthorized } from './session.js';
import { button, field, fill, form, h, input } from './dom.js';
import * as keys from './pages/keys.js';
import * as usage from './pages/usage.js';
import * as consolePage from './pages/console.js';
import * as queues from './pages/queues.js';
import * as connect from './pages/connect.js';
import * as users from './pages/users.js';
import * as plans from './pages/plans.js';
import * as server from './pages/server.js';

const USER_PAGES = [
  ['usage', 'Usage', usage], ['keys', 'Keys', keys], ['console', 'Live console', consolePage],
  ['queues', 'Queues', queues], ['connect', 'Connect', connect],
];
const ADMIN_PAGES = [['users', 'Users', users], ['plans', 'Plans', plans], ['server', 'Server', server]];

const session = new Session();
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const noticeEl = document.getElementById('notice');
const alertEl = document.getElementById('alert');
let current = null; // the page on screen: {dispose?}
let noticeTimer = null;

function notify(text) {
  alertEl.textContent = '';
  noticeEl.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { noticeEl.textContent = ''; }, 6000);
}

function fail(err) {
  if (isUnauthorized(err) && session.kind === 'user') { session.expire(err); return; } // even a new token is refused
  noticeEl.textContent = '';
  alertEl.textContent = typeof err === 'string' ? err : describe(err);
}

function pages() {
  if (session.kind === 'admin') return ADMIN_PAGES;
  if (session.kind === 'user') return USER_PAGES;
  return [];
}

function renderNav(active) {
  fill(nav, h('ul', {}, pages().map(([id, title]) => h('li', {},
    h('a', { href: `#/${id}`, 'aria-current': id === active ? 'page' : false }, title)))));
  if (session.kind) {
    const label = session.kind === 'admin' ? 'Admin' : `${session.state.userId} · app ${session.state.app}`;
    fill(who, h('span', { class: 'who-name' }, label), button('Sign out', () => {
      session.signOut();
      notify('Signed out.');
      go('#/');
    }));
  } else {
    fill(who);
  }
}

function signInPage() {
  const apiKey = input({ type: 'password', name: 'api_key', required: true, autocomplete: 'off' });
  const app = input({ name: 'app', value: 'default', required: true });
  const adminKey = input({ type: 'password', name: 'admin_key', required: true });
  const userForm = form({ class: 'card', 'aria-labelledby': 'signin-user' }, async () => {
    if (!apiKey.value.trim()) { fail('Enter an API key.'); return; }
    try {
      await session.signInUser(apiKey.value.trim(), app.value.trim() || 'default');
      notify(`Signed in as ${session.state.userId}.`);
      go('#/usage');
    } catch (err) {
      fail(err.status === 401
        ? `Sign-in failed: ${err.message}. The key is wrong, was revoked, or its user is disabled.`
        : `Sign-in failed: ${describe(err)}`);
    }
  },
  h('h2', { id: 'signin-user' }, 'Sign in with an API key'),
  h('p', {}, 'The key is exchanged at POST /token for a short-lived token for one app; both stay in this tab only.'),
  field('API key', apiKey), field('App', app, 'Topics and queues live under userid_app_.'),
  h('button', { type: 'submit' }, 'Sign in'));
  const adminForm = form({ class: 'card', 'aria-labelledby': 'signin-admin' }, async () => {
    if (!adminKey.value.trim()) { fail('Enter the admin key.'); return; }
    try {
      await session.signInAdmin(adminKey.value.trim());
      notify('Signed in as admin.');
      go('#/users');
    } catch (err) {
      fail(`Admin sign-in failed: ${describe(err)}`);
    }
  },
  h('h2', { id: 'signin-admin' }, 'Admin'),
  h('p', {}, 'The admin key is printed at the first start and kept in data/admin.key.'),
  field('Admin key', adminKey), h('button', { type: 'submit' }, 'Sign in as admin'));
  return h('div', {}, h('h1', {}, 'Sign in'), h('div', { class: 'grid2' }, userForm, adminForm));
}

/** Show the page of `hash` (hashchange renders it, or we do when the hash is already there). */
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (current && current.dispose) current.dispose();
  current = null;
  if (session.lastError) { fail(session.lastError); session.lastError = null; }
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const available = pages();
  if (!session.kind) {
    renderNav(null);
    fill(main, signInPage());
    document.title = 'Sign in · Flow-Gate';
    return;
  }
  const found = available.find(([id]) => id === name) || available[0];
  renderNav(found[0]);
  document.title = `${found[1]} · Flow-Gate`;
  const ctx = { session, client: session.client, notify, fail, args: rest.map(decodeURIComponent) };
  const page = found[2].render(ctx);
  current = page;
  fill(main, page.el);
}

session.onChange((state) => { if (!state) route(); });
window.addEventListener('hashchange', () => {
  alertEl.textContent = '';
  route();
  main.focus({ preventScroll: false }); // keyboard and screen-reader users start at the new page
});
route();
