// Live console: a WebSocket on /ws (protocols/ws); subscribe to filters, watch messages arrive, publish.
import { describe } from '../api.js';
import { button, field, fill, form, h, input } from '../dom.js';

const MAX_SHOWN = 500;

function hexOf(base64) {
  try {
    const bytes = atob(base64);
    const shown = [];
    for (let i = 0; i < Math.min(bytes.length, 256); i += 1) shown.push(bytes.charCodeAt(i).toString(16).padStart(2, '0'));
    return shown.join(' ') + (bytes.length > 256 ? ' …' : '');
  } catch {
    return '(invalid base64)';
  }
}

/** [kind, text] of a message frame: binary (base64 on the wire) as hex and base64, JSON pretty-printed, text as is. */
function kindOf(frame) {
  if (frame.encoding === 'base64' && typeof frame.data === 'string') {
    return ['binary', `hex: ${hexOf(frame.data)}\nbase64: ${frame.data}`];
  }
  if (typeof frame.data === 'string') return ['text', frame.data];
  return ['json', JSON.stringify(frame.data, null, 2)];
}

export function render(ctx) {
  const { session } = ctx;
  let ws = null;
  let closed = false;
  let attempt = 0;
  let retryTimer = null;
  let forceRefresh = false;
  let paused = false;
  let nextId = 1;
  let lastSeq = 0;
  const held = []; // messages that arrived while paused
  const filters = new Map(); // filter -> since (first subscription only)
  const pending = new Map(); // publish id -> topic

  const status = h('p', { class: 'conn', role: 'status' }, 'Connecting…');
  const subs = h('ul', { class: 'subs', 'aria-label': 'Subscriptions' });
  const log = h('ol', { class: 'log', 'aria-label': 'Messages', 'aria-live': 'off' });
  const counter = h('span', { class: 'hint' }, '0 messages');
  const outcome = h('p', { class: 'outcome', role: 'status' });
  const filterInput = input({ name: 'filter', value: '#', required: true });
  const sinceInput = input({ type: 'number', name: 'since', min: 1, step: 1, inputmode: 'numeric' });
  const topicInput = input({ name: 'topic', required: true, value: 'sensors/demo' });
  const messageInput = h('textarea', { name: 'message', rows: 3 });
  const kindSelect = h('select', { name: 'kind' }, h('option', { value: 'text' }, 'Text'), h('option', { value: 'json' }, 'JSON'));
  const idemInput = input({ name: 'idempotency_key', maxlength: 200 });
  const pauseButton = button('Pause', () => togglePause(), { 'aria-pressed': 'false' });

  const setStatus = (text, cls) => { status.textContent = text; status.className = `conn ${cls}`; };
  const count = () => { counter.textContent = `${log.children.length} messages${held.length ? `, ${held.length} held while paused` : ''}`; };

  const show = (frame) => {
    const [kind, text] = kindOf(frame);
    const item = h('li', { class: 'msg' },
      h('div', { class: 'msg-head' },
        h('span', { class: 'topic' }, frame.topic),
        h('span', { class: 'seq' }, `seq ${frame.seq}`),
        h('time', { datetime: frame.published_at || '' }, frame.published_at ? new Date(frame.published_at).toLocaleTimeString() : ''),
        h('span', { class: `badge kind-${kind}` }, kind)),
      h('pre', { class: 'payload' }, text));
    log.prepend(item);
    while (log.children.length > MAX_SHOWN) log.lastElementChild.remove();
  };

  const togglePause = () => {
    paused = !paused;
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    pauseButton.setAttribute('aria-pressed', String(paused));
    if (!paused) { held.splice(0).forEach(show); }
    count();
  };

  const sendFrame = (frame) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  };

  const subscribeFrame = (filter, since) => {
    const frame = { action: 'subscribe', topic: filter };
    if (since !== null && since !== undefined) frame.since = since; // the server resumes after `since`
    return frame;
  };

  const renderSubs = () => {
    fill(subs, [...filters.keys()].map((f) => h('li', {}, h('code', {}, f), ' ',
      button('Unsubscribe', () => {
        filters.delete(f);
        sendFrame({ action: 'unsubscribe', topic: f });
        renderSubs();
      }, { 'aria-label': `Unsubscribe from ${f}` }))));
  };

  const onFrame = (frame) => {
    switch (frame.action) {
      case 'message':
        if (typeof frame.seq === 'number') lastSeq = Math.max(lastSeq, frame.seq);
        if (paused) held.push(frame); else show(frame);
        count();
        break;
      case 'ack':
        if (pending.has(frame.id)) {
          outcome.textContent = `Published to ${pending.get(frame.id)}: acknowledged, seq ${frame.seq}${frame.duplicate ? ' (duplicate)' : ''}.`;
          outcome.className = 'outcome ok';
          pending.delete(frame.id);
        }
        break;
      case 'error': {
        const text = `${frame.message} (${frame.code})${frame.retry_after ? `; retry in ${Math.ceil(frame.retry_after)} s` : ''}`;
        if (frame.id !== undefined && pending.has(frame.id)) {
          pending.delete(frame.id);
          outcome.textContent = `Publish failed: ${text}`;
          outcome.className = 'outcome bad';
        } else {
          ctx.fail(`Console: ${text}`);
        }
        break;
      }
      case 'gap':
        log.prepend(h('li', { class: 'msg gap' }, `Gap: messages from seq ${frame.requested_seq} were already removed; replay starts at ${frame.first_available_seq}.`));
        break;
      case 'token_expiring':
        session.refresh().then((token) => sendFrame({ action: 'auth', token })).catch((err) => ctx.fail(err));
        break;
      default:
        break;
    }
  };

  const connect = async () => {
    if (closed) return;
    let token;
    try {
      token = forceRefresh ? await session.refresh() : await session.token();
      forceRefresh = false;
    } catch (err) {
      setStatus(`Cannot get a token: ${describe(err)}`, 'bad');
      scheduleReconnect();
      return;
    }
    if (closed) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
    ws = socket;
    socket.addEventListener('open', () => {
      attempt = 0;
      setStatus('Connected', 'ok');
      for (const f of filters.keys()) sendFrame(subscribeFrame(f, lastSeq || null)); // resume after the last seen
    });
    socket.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      onFrame(frame);
    });
    socket.addEventListener('close', (event) => {
      if (ws !== socket) return;
      ws = null;
      for (const [id, topic] of pending) {
        outcome.textContent = `Publish to ${topic}: connection closed before the acknowledgement.`;
        outcome.className = 'outcome bad';
        pending.delete(id);
      }
      if (closed) return;
      if (event.code === 4401) forceRefresh = true; // token expired or invalid: get a new one first
      scheduleReconnect(event);
    });
  };

  const scheduleReconnect = (event) => {
    if (closed) return;
    attempt += 1;
    const limited = event && event.code === 4402; // quota or connection limit: no point in hurrying
    const delay = limited ? 30000 : Math.min(3000, 250 * 2 ** (attempt - 1));
    const why = event ? ` (closed ${event.code}${event.reason ? `: ${event.reason}` : ''})` : '';
    setStatus(limited
      ? `Disconnected: plan limit reached${why}. Retrying in 30 s.`
      : `Reconnecting in ${(delay / 1000).toFixed(1)} s, attempt ${attempt}${why}…`, limited ? 'bad' : 'warn');
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  };

  const subscribeForm = form({ class: 'card inline-form', 'aria-label': 'Subscribe' }, async () => {
    const f = filterInput.value.trim();
    if (!f) { ctx.fail('Enter a topic filter, e.g. sensors/# or sensors/+/temp.'); return; }
    const from = sinceInput.value ? Number(sinceInput.value) : null;
    if (from !== null && (!Number.isInteger(from) || from < 1)) { ctx.fail('Replay from a seq of 1 or more.'); return; }
    const since = from === null ? null : from - 1; // the protocol's since is the last seq already seen
    filters.set(f, since);
    renderSubs();
    if (!sendFrame(subscribeFrame(f, since))) ctx.notify(`Subscribed to ${f} once the console is connected.`);
    else ctx.notify(`Subscribed to ${f}${from !== null ? ` from seq ${from}` : ''}.`);
  },
  h('h2', {}, 'Subscribe'),
  field('Topic filter', filterInput, '+ matches one level, # the rest'),
  field('Replay from seq (optional)', sinceInput),
  h('button', { type: 'submit' }, 'Subscribe'));

  const publishForm = form({ class: 'card inline-form', 'aria-label': 'Publish' }, async () => {
    const topic = topicInput.value.trim();
    if (!topic) { ctx.fail('Enter a topic to publish to.'); return; }
    let message = messageInput.value;
    if (kindSelect.value === 'json') {
      try { message = JSON.parse(message); } catch (exc) {
        outcome.textContent = `Not valid JSON: ${exc.message}`;
        outcome.className = 'outcome bad';
        return;
      }
    }
    const id = nextId++;
    const frame = { action: 'publish', id, topic, message };
    if (idemInput.value.trim()) frame.idempotency_key = idemInput.value.trim();
    pending.set(id, topic);
    if (!sendFrame(frame)) {
      pending.delete(id);
      outcome.textContent = 'Not connected: the message was not sent.';
      outcome.className = 'outcome bad';
      return;
    }
    outcome.textContent = `Publishing to ${topic}…`;
    outcome.className = 'outcome';
  },
  h('h2', {}, 'Publish'),
  field('Topic', topicInput), field('Message', messageInput), field('Send as', kindSelect),
  field('Idempotency key (optional)', idemInput),
  h('button', { type: 'submit' }, 'Publish'), outcome);

  const el = h('section', { class: 'console' },
    h('h1', {}, 'Live console'), status,
    h('div', { class: 'grid2' }, h('div', {}, subscribeForm, subs), publishForm),
    h('div', { class: 'row toolbar' }, pauseButton,
      button('Clear', () => { log.replaceChildren(); held.length = 0; count(); }), counter),
    log);
  connect();
  return {
    el,
    dispose: () => {
      closed = true;
      clearTimeout(retryTimer);
      if (ws) ws.close(1000, 'page left');
    },
  };
}
