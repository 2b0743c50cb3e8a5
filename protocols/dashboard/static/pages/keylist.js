// API keys: list, create (value shown once, with copy and a warning), revoke, optional per-key rate limit.
// `keys` is {list(), create(name, rateLimit), revoke(id)}: the user's own (userKeys) or a user's for the admin (adminKeys).
import { button, copy, field, fill, form, h, input, table, when } from '../dom.js';

export const userKeys = (client) => ({
  list: () => client.keys(), create: (name, rate) => client.createKey(name, rate), revoke: (id) => client.deleteKey(id),
});
export const adminKeys = (admin, userId) => ({
  list: () => admin.keys(userId), create: (name, rate) => admin.createKey(userId, name, rate),
  revoke: (id) => admin.deleteKey(userId, id),
});

export function keyManager(ctx, api, currentKeyId) {
  const list = h('div', {}, h('p', {}, 'Loading keys…'));
  const created = h('div', { class: 'created' });
  const name = input({ name: 'key_name', required: true, maxlength: 100 });
  const rate = input({ type: 'number', name: 'rate', min: 0, step: 'any', inputmode: 'decimal' });
  const burst = input({ type: 'number', name: 'burst', min: 1, step: 1, inputmode: 'numeric' });

  const load = async () => {
    try {
      const keys = await api.list();
      fill(list, table('API keys', ['Name', 'Key id', 'Created', 'Rate limit', ''], keys.map((k) => h('tr', {},
        h('td', {}, k.name, k.id === currentKeyId ? h('span', { class: 'badge' }, 'this session') : null),
        h('td', {}, h('code', {}, k.id)),
        h('td', {}, when(k.created_at)),
        h('td', {}, k.rate_limit ? `${k.rate_limit.rate}/s, burst ${k.rate_limit.burst}` : 'plan'),
        h('td', {}, button('Revoke', () => revoke(k), { class: 'danger', 'aria-label': `Revoke key ${k.name}` }))))));
    } catch (err) {
      ctx.fail(err);
    }
  };

  const revoke = async (k) => {
    const own = k.id === currentKeyId;
    const warning = own ? ' This session signed in with it: you will be signed out.' : '';
    if (!window.confirm(`Revoke the key "${k.name}"? Tokens issued from it stop working at once.${warning}`)) return;
    try {
      await api.revoke(k.id);
      if (own) {  // this session's token was issued from the key, so it ends with it
        ctx.session.signOut();
        ctx.notify(`Key ${k.name} revoked. It was this session's key: you are signed out.`);
        window.location.hash = '#/';
        return;
      }
      ctx.notify(`Key ${k.name} revoked.`);
      await load();
    } catch (err) {
      ctx.fail(err);
    }
  };

  const create = form({ class: 'card inline-form', 'aria-label': 'Create a key' }, async () => {
    if (!name.value.trim()) { ctx.fail('Give the key a name.'); return; }
    const limit = rate.value ? { rate: Number(rate.value), burst: Number(burst.value || 1) } : undefined;
    try {
      const key = await api.create(name.value.trim(), limit);
      const value = input({ readonly: true, value: key.key, class: 'secret', name: 'new_key' });
      fill(created, h('div', { class: 'card warn' },
        h('h3', {}, `New key "${key.name}"`),
        h('p', {}, 'Copy it now: this is the only time the value is shown. Anyone with it can use your account.'),
        field('New key value', value),
        key.access_key_id ? [  // the same key as AWS credentials, for SQS clients (boto3, aws CLI)
          field('AWS access key id', input({ readonly: true, value: key.access_key_id, name: 'aws_access_key_id' })),
          field('AWS secret access key',
            input({ readonly: true, value: key.secret_access_key, class: 'secret', name: 'aws_secret_access_key' })),
        ] : null,
        h('div', { class: 'row' }, button('Copy key', () => copy(key.key, ctx.notify)),
          button('Done', () => fill(created)))));
      value.focus();
      value.select();
      name.value = '';
      ctx.notify(`Key ${key.name} created.`);
      await load();
    } catch (err) {
      ctx.fail(err);
    }
  },
  h('h2', {}, 'Create a key'),
  field('Key name', name), field('Rate limit (messages/s, optional)', rate), field('Burst (optional)', burst),
  h('button', { type: 'submit' }, 'Create key'));

  load();
  return h('div', {}, created, create, list);
}
