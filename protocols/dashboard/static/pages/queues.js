// Queues: the namespace's queues with their counts; create, attributes, purge, delete; send, receive,
// delete or release received messages; open a queue's dead-letter queue.
import { button, field, fill, form, h, input, number, table, when } from '../dom.js';


const ATTRIBUTES = [
  ['visibility_timeout', 'Visibility timeout (s)', '0-43200'],
  ['message_retention_seconds', 'Retention (s)', '60-1209600'],
  ['delay_seconds', 'Delay (s)', '0-900'],
  ['receive_wait_seconds', 'Long-poll wait (s)', '0-20'],
  ['max_message_bytes', 'Largest message (bytes)', ''],
];

export function render(ctx) {
  const { client } = ctx;
  const listBox = h('div', {}, h('p', {}, 'Loading queues…'));
  const detail = h('div', { class: 'queue-detail' });
  let selected = ctx.args[0] || null;
  let infoLine = null; // the open queue's counts, kept current by loadList

  const describeQueue = (info) => `${info.queue} · created ${when(info.created_at)} · visible ${number(info.approximate_visible)}, `
    + `in flight ${number(info.approximate_in_flight)}, delayed ${number(info.approximate_delayed)}`;

  const loadList = async () => {
    try {
      const queues = await client.queues();
      const infos = await Promise.all(queues.map((q) => client.queue(q.name).attributes().catch(() => ({ ...q }))));
      const current = infos.find((q) => q.name === selected);
      if (current && infoLine && current.created_at) infoLine.textContent = describeQueue(current);
      fill(listBox, table('Queues in this namespace', ['Queue', 'Visible', 'In flight', 'Delayed', ''], infos.map((q) => h('tr', {},
        h('td', {}, h('code', {}, q.name)),
        h('td', {}, number(q.approximate_visible)),
        h('td', {}, number(q.approximate_in_flight)),
        h('td', {}, number(q.approximate_delayed)),
        h('td', {}, button('Open', () => open(q.name), { 'aria-label': `Open queue ${q.name}` }))))));
    } catch (err) {
      ctx.fail(err);
    }
  };

  const refresh = async () => {
    await loadList();
    if (selected) await showQueue(selected);
  };

  const open = (name) => {
    selected = name;
    showQueue(name).then(() => detail.querySelector('h2')?.focus());
  };

  const showQueue = async (name) => {
    let info;
    try {
      info = await client.queue(name).attributes();
    } catch (err) {
      ctx.fail(err);
      return;
    }
    const attrs = info.attributes;
    const inputs = Object.fromEntries(ATTRIBUTES.map(([key]) => [key, input({
      type: 'number', name: key, min: 0, step: 1, inputmode: 'numeric', value: attrs[key],
    })]));
    const policy = attrs.redrive_policy;
    const dlq = input({ name: 'dead_letter_queue', value: policy ? policy.dead_letter_queue : '' });
    const maxReceive = input({ type: 'number', name: 'max_receive_count', min: 1, max: 1000, value: policy ? policy.max_receive_count : '' });
    const attributesForm = form({ class: 'card', 'aria-label': 'Queue attributes' }, async () => {
      const body = {};
      for (const [key] of ATTRIBUTES) if (inputs[key].value !== '') body[key] = Number(inputs[key].value);
      body.redrive_policy = dlq.value.trim()
        ? { dead_letter_queue: dlq.value.trim(), max_receive_count: Number(maxReceive.value || 5) } : null;
      try {
        await client.queue(name).create(body);
        ctx.notify(`Attributes of ${name} saved.`);
        await refresh();
      } catch (err) { ctx.fail(err); }
    },
    h('h3', {}, 'Attributes'),
    h('div', { class: 'fields' }, ATTRIBUTES.map(([key, label, hint]) => field(label, inputs[key], hint)),
      field('Dead-letter queue', dlq, 'empty: none'), field('Max receives before dead-lettering', maxReceive)),
    h('button', { type: 'submit' }, 'Save attributes'));

    const body = h('textarea', { name: 'body', rows: 2 });
    const delay = input({ type: 'number', name: 'delay_seconds', min: 0, max: 900 });
    const sendForm = form({ class: 'card', 'aria-label': 'Send a message' }, async () => {
      try {
        const sent = await client.queue(name).send(body.value, { delaySeconds: delay.value ? Number(delay.value) : undefined });
        body.value = '';
        await loadList(); // updates the counts without redrawing the forms
        ctx.notify(`Sent message ${sent.message_id} to ${name}.`);
      } catch (err) { ctx.fail(err); }
    }, h('h3', {}, 'Send'), field('Message body', body), field('Delay (s, optional)', delay),
    h('button', { type: 'submit' }, 'Send message'));

    const received = h('div', { class: 'received' });
    const max = input({ type: 'number', name: 'max', min: 1, max: 10, value: 1 });
    const visibility = input({ type: 'number', name: 'visibility_timeout', min: 0, max: 43200 });
    const wait = input({ type: 'number', name: 'wait', min: 0, max: 20, value: 0 });
    const receiveForm = form({ class: 'card', 'aria-label': 'Receive messages' }, async () => {
      const options = { max: Number(max.value || 1), wait: Number(wait.value || 0) };
      if (visibility.value) options.visibilityTimeout = Number(visibility.value);
      try {
        const messages = await client.queue(name).receive(options);
        showReceived(name, received, messages);
        await loadList();
      } catch (err) { ctx.fail(err); }
    }, h('h3', {}, 'Receive'), field('Max messages', max), field('Visibility timeout (s, optional)', visibility),
    field('Wait (s)', wait), h('button', { type: 'submit' }, 'Receive'), received);

    infoLine = h('p', {}, describeQueue(info));
    fill(detail, h('section', { 'aria-label': `Queue ${name}` },
      h('h2', { tabindex: '-1' }, `Queue ${name}`),
      infoLine,
      h('div', { class: 'row' },
        button('Refresh', () => refresh()),
        policy ? button('Open dead-letter queue', () => open(policy.dead_letter_queue)) : null,
        button('Purge', async () => {
          if (!window.confirm(`Delete every message in ${name}?`)) return;
          try { await client.queue(name).purge(); ctx.notify(`${name} purged.`); await refresh(); } catch (err) { ctx.fail(err); }
        }, { class: 'danger' }),
        button('Delete queue', async () => {
          if (!window.confirm(`Delete the queue ${name} and its messages?`)) return;
          try {
            await client.queue(name).delete();
            ctx.notify(`Queue ${name} deleted.`);
            selected = null;
            fill(detail);
            await loadList();
          } catch (err) { ctx.fail(err); }
        }, { class: 'danger' })),
      h('div', { class: 'grid3' }, sendForm, receiveForm, attributesForm)));
  };

  const showReceived = (name, box, messages) => {
    if (!messages.length) { fill(box, h('p', { role: 'status' }, 'No message available.')); return; }
    fill(box, h('ul', { class: 'received-list', 'aria-label': 'Received messages' }, messages.map((m) => {
      const item = h('li', { class: 'msg' },
        h('div', { class: 'msg-head' }, h('code', {}, m.messageId), h('span', {}, `received ${m.receiveCount}×`),
          h('span', {}, when(m.sentAt))),
        h('pre', { class: 'payload' }, m.encoding === 'base64' ? `base64: ${m.body}`
          : typeof m.body === 'string' ? m.body : JSON.stringify(m.body, null, 2)));
      const done = (text) => fill(item, h('p', { class: 'hint' }, text));
      item.append(h('div', { class: 'row' },
        button('Delete message', async () => {
          try { await m.delete(); done(`Deleted ${m.messageId}.`); await loadList(); } catch (err) { ctx.fail(err); }
        }, { 'aria-label': `Delete message ${m.messageId}` }),
        button('Release', async () => {
          try { await m.release(0); done(`Released ${m.messageId}: visible again.`); await loadList(); } catch (err) { ctx.fail(err); }
        }, { 'aria-label': `Release message ${m.messageId}` })));
      return item;
    })));
  };

  const newName = input({ name: 'queue_name', required: true });
  const createForm = form({ class: 'card inline-form', 'aria-label': 'Create a queue' }, async () => {
    const name = newName.value.trim();
    if (!name) { ctx.fail('Enter a queue name.'); return; }
    try {
      await client.queue(name).create({});
      ctx.notify(`Queue ${name} created.`);
      newName.value = '';
      await loadList();
      open(name);
    } catch (err) { ctx.fail(err); }
  }, h('h2', {}, 'Create a queue'), field('Queue name', newName), h('button', { type: 'submit' }, 'Create queue'));

  refresh();
  return { el: h('section', {}, h('div', { class: 'title-row' }, h('h1', {}, 'Queues'), button('Refresh list', loadList)), createForm, listBox, detail) };
}
