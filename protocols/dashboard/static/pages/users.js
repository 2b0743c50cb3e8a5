// Users (admin): list, search, create; a user's page: plan, disable, limit overrides, credits, keys, usage, delete.
import { button, field, fill, form, h, input, table, when } from '../dom.js';
import { adminKeys, keyManager } from './keylist.js';
import { usageCharts, usageFigures } from './usagefigures.js';

const LIMITS = [
  ['quota', 'Monthly quota (units)'], ['rate', 'Rate (msg/s)'], ['burst', 'Burst'],
  ['max_connections', 'Connections'], ['max_message_bytes', 'Largest message (bytes)'],
];

async function planOptions(ctx, selected) {
  let names = ['free', 'pro'];
  try { names = (await ctx.client.plans()).plans.map((p) => p.name); } catch { /* keep defaults */ }
  return names.map((n) => h('option', { value: n, selected: n === selected }, n));
}

function listPage(ctx) {
  const search = input({ type: 'search', name: 'search', placeholder: 'user id' });
  const listBox = h('div', {}, h('p', {}, 'Loading users…'));
  let users = [];
  const show = () => {
    const term = search.value.trim().toLowerCase();
    const shown = users.filter((u) => !term || u.user_id.includes(term) || u.plan.includes(term));
    fill(listBox, table(`Users (${shown.length} of ${users.length})`, ['User', 'Plan', 'Status', 'Created', ''],
      shown.map((u) => h('tr', {},
        h('td', {}, h('a', { href: `#/users/${encodeURIComponent(u.user_id)}` }, u.user_id)),
        h('td', {}, u.plan), h('td', {}, u.disabled ? 'disabled' : 'active'), h('td', {}, when(u.created_at)),
        h('td', {}, h('a', { href: `#/users/${encodeURIComponent(u.user_id)}`, 'aria-label': `Manage ${u.user_id}` }, 'Manage'))))));
  };
  const load = async () => {
    try { users = await ctx.client.users(); show(); } catch (err) { ctx.fail(err); }
  };
  search.addEventListener('input', show);

  const newId = input({ name: 'user_id', required: true, pattern: '[a-z0-9-]{1,64}' });
  const plan = h('select', { name: 'plan' });
  planOptions(ctx, 'free').then((options) => fill(plan, options));
  const createForm = form({ class: 'card inline-form', 'aria-label': 'Create a user' }, async () => {
    const id = newId.value.trim();
    if (!/^[a-z0-9-]{1,64}$/.test(id)) { ctx.fail('A user id is 1-64 characters of a-z, 0-9 and -.'); return; }
    try {
      await ctx.client.createUser(id, plan.value || 'free');
      ctx.notify(`User ${id} created.`);
      location.hash = `#/users/${encodeURIComponent(id)}`;
    } catch (err) { ctx.fail(err); }
  }, h('h2', {}, 'Create a user'), field('User ID', newId, 'a-z, 0-9 and -'), field('Plan', plan),
  h('button', { type: 'submit' }, 'Create user'));

  load();
  return { el: h('section', {}, h('h1', {}, 'Users'), createForm, field('Search users', search), listBox) };
}

function userPage(ctx, id) {
  const admin = ctx.client;
  const head = h('div', {}, h('p', {}, 'Loading…'));
  const usageBox = h('div', {});
  const load = async () => {
    let user;
    try { user = await admin.user(id); } catch (err) { ctx.fail(err); return; }
    const overrides = (user.extra && user.extra.limits) || {};
    const plan = h('select', { name: 'plan' }, await planOptions(ctx, user.plan));
    const limitInputs = Object.fromEntries(LIMITS.map(([k]) => [k, input({
      type: 'number', name: k, min: 0, step: 'any', value: overrides[k] ?? '', placeholder: 'plan default' })]));
    const credits = input({ type: 'number', name: 'credits', min: 1, step: 1 });
    const patch = async (body, done) => {
      try { await admin.updateUser(id, body); ctx.notify(done); await load(); } catch (err) { ctx.fail(err); }
    };
    fill(head,
      h('p', {}, `Plan ${user.plan} · ${user.disabled ? 'disabled' : 'active'} · created ${when(user.created_at)}`),
      h('div', { class: 'grid3' },
        form({ class: 'card', 'aria-label': 'Plan' }, () => patch({ plan: plan.value }, `Plan of ${id} set to ${plan.value}.`),
          h('h2', {}, 'Plan'), field('Plan', plan), h('button', { type: 'submit' }, 'Save plan'),
          h('p', {}, user.disabled ? 'This user is disabled: no tokens, no connections.' : 'This user is active.'),
          button(user.disabled ? 'Enable user' : 'Disable user',
            () => patch({ disabled: !user.disabled }, `${id} ${user.disabled ? 'enabled' : 'disabled'}.`),
            { class: user.disabled ? '' : 'danger' })),
        form({ class: 'card', 'aria-label': 'Limit overrides' }, () => {
          const limits = {};
          for (const [k] of LIMITS) limits[k] = limitInputs[k].value === '' ? null : Number(limitInputs[k].value);
          return patch({ limits }, `Limits of ${id} saved.`);
        }, h('h2', {}, 'Limit overrides'), h('p', { class: 'hint' }, 'Empty: the plan\'s value.'),
        LIMITS.map(([k, label]) => field(label, limitInputs[k])), h('button', { type: 'submit' }, 'Save overrides')),
        form({ class: 'card', 'aria-label': 'Credits' }, async () => {
          const amount = Number(credits.value);
          if (!Number.isInteger(amount) || amount <= 0) { ctx.fail('Credits must be a positive whole number.'); return; }
          try {
            const r = await admin.addCredits(id, amount);
            ctx.notify(`Added ${amount} credits to ${id}: balance ${r.balance}.`);
            credits.value = '';
            await loadUsage();
          } catch (err) { ctx.fail(err); }
        }, h('h2', {}, 'Credits'), field('Credits to add', credits), h('button', { type: 'submit' }, 'Add credits'))));
  };
  const loadUsage = async () => {
    try {
      const [u, history] = await Promise.all([admin.usage(id), admin.usageHistory(id)]);
      fill(usageBox, h('h2', {}, 'Usage'), usageFigures(u), usageCharts(history));
    } catch (err) { ctx.fail(err); }
  };
  const remove = button('Delete user', async () => {
    if (!window.confirm(`Delete the user ${id}? Their keys stop working at once.`)) return;
    try { await admin.deleteUser(id); ctx.notify(`User ${id} deleted.`); location.hash = '#/users'; } catch (err) { ctx.fail(err); }
  }, { class: 'danger' });
  load();
  loadUsage();
  return {
    el: h('section', {}, h('p', {}, h('a', { href: '#/users' }, '← All users')),
      h('div', { class: 'title-row' }, h('h1', {}, `User ${id}`), remove), head,
      h('h2', {}, 'API keys'), keyManager(ctx, adminKeys(admin, id), null), usageBox),
  };
}

export function render(ctx) {
  return ctx.args[0] ? userPage(ctx, ctx.args[0]) : listPage(ctx);
}
