// Live console on the JavaScript client's Subscription (one WebSocket on /ws that reconnects and resumes from
// the last seq it saw): subscribe to filters, watch messages arrive, publish on that socket and see the
// acknowledgement or the error.
import { ConnectionFailed, PaymentRequired, Unauthorized } from '/sdk/flowgate.js';
import { describe } from '../session.js';
import { button, field, fill, form, h, input } from '../dom.js';

const MAX_SHOWN = 500;
const LIMITED_RETRY = 30000; // after a 4402 (quota or connection limit) the console tries again this much later

function hexOf(bytes) {
  const shown = [];
  for (let i = 0; i < Math.min(bytes.length, 256); i += 1) shown.push(bytes[i].toString(16).padStart(2, '0'));
  return shown.join(' ') + (bytes.length > 256 ? ' …' : '');
}

function base64Of(bytes) {
  let raw = '';
  for (let i = 0; i < bytes.length; i += 1) raw += String.fromCharCode(bytes[i]);
  return btoa(raw);
}

/** [kind, text] of a message: binary as hex and base64, JSON pretty-printed, text as is. */
function kindOf(message) {
  const { data } = message;
  if (data instanceof Uint8Array) return ['binary', `hex: ${hexOf(data)}\nbase64: ${base64Of(data)}`];
  if (typeof data === 'string') return ['text', data];
  return ['json', JSON.stringify(data, null, 2)];
}

/** "message (status)", with when to retry: how the console words a refused publish or subscription. */
function brief(err) {
  if (!err || !err.status) return describe(err);
  const wait = Number(err.details && err.details.retry_after);
  return `${err.message} (${err.status})${Number.isFinite(wait) && wait > 0 ? `; retry in ${Math.ceil(wait)} s` : ''}`;
}

export function render(ctx) {
  const { client } = ctx;
  let sub = null;
  let closed = false;
  let retryTimer = null;
  let paused = false;
  const held = []; // messages that arrived while paused

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
  const setOutcome = (text, cls = '') => { outcome.textContent = text; outcome.className = `outcome ${cls}`; };
  const count = () => { counter.textContent = `${log.children.length} messages${held.length ? `, ${held.length} held while paused` : ''}`; };

  const show = (message) => {
    const [kind, text] = kindOf(message);
    const time = message.publishedAt;
    const item = h('li', { class: 'msg' },
      h('div', { class: 'msg-head' },
        h('span', { class: 'topic' }, message.topic),
        h('span', { class: 'seq' }, `seq ${message.seq}`),
        h('time', { datetime: time ? time.toISOString() : '' }, time ? time.toLocaleTimeString() : ''),
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

  const renderSubs = () => {
    fill(subs, (sub ? sub.filters : []).map((f) => h('li', {}, h('code', {}, f), ' ',
      button('Unsubscribe', () => {
        sub.remove(f);
        renderSubs();
      }, { 'aria-label': `Unsubscribe from ${f}` }))));
  };

  const onStatus = (st) => {
    const why = st.code ? ` (closed ${st.code}${st.reason ? `: ${st.reason}` : ''})` : (st.error ? ` (${describe(st.error)})` : '');
    switch (st.state) {
      case 'connecting':
        if (st.attempt > 1) setStatus(`Reconnecting, attempt ${st.attempt}…`, 'warn');
        break;
      case 'connected':
        setStatus('Connected', 'ok');
        break;
      case 'reconnecting':
        setStatus(`Reconnecting in ${(st.delay / 1000).toFixed(1)} s, attempt ${st.attempt}${why}…`, 'warn');
        break;
      case 'closed':
        if (closed || !st.error) break;
        if (st.error instanceof PaymentRequired) { // quota or connection limit: no point in hurrying
          setStatus(`Disconnected: plan limit reached${why}. Retrying in ${LIMITED_RETRY / 1000} s.`, 'bad');
          retryTimer = setTimeout(() => start(sub.filters, sub.lastSeq), LIMITED_RETRY);
        } else {
          setStatus(`Disconnected: ${describe(st.error)}`, 'bad');
          if (st.error instanceof Unauthorized) ctx.fail(st.error); // the key no longer works: signed out
        }
        break;
      default:
        break;
    }
  };

  /** A subscription on the client for `filters` (none at first), resuming after `since` when given. */
  const start = (filters, since) => {
    if (closed) return;
    sub = client.subscribe(filters, {
      since,
      onStatus,
      onMessage: (message) => {
        if (paused) held.push(message); else show(message);
        count();
      },
      onGap: (gap) => log.prepend(h('li', { class: 'msg gap' },
        `Gap: messages from seq ${gap.requestedSeq} were already removed; replay starts at ${gap.firstAvailableSeq}.`)),
      onError: (err) => { if (!(err instanceof Unauthorized)) ctx.fail(`Console: ${brief(err)}`); },
    });
    renderSubs();
  };

  const subscribeForm = form({ class: 'card inline-form', 'aria-label': 'Subscribe' }, async () => {
    const f = filterInput.value.trim();
    if (!f) { ctx.fail('Enter a topic filter, e.g. sensors/# or sensors/+/temp.'); return; }
    const from = sinceInput.value ? Number(sinceInput.value) : null;
    if (from !== null && (!Number.isInteger(from) || from < 1)) { ctx.fail('Replay from a seq of 1 or more.'); return; }
    const connected = sub.connected;
    const added = sub.add(f, { since: from === null ? null : from - 1 }); // the protocol's since is the last seq seen
    renderSubs();
    if (!connected) ctx.notify(`Subscribed to ${f} once the console is connected.`);
    try {
      await added;
      if (connected) ctx.notify(`Subscribed to ${f}${from !== null ? ` from seq ${from}` : ''}.`);
    } catch (err) {
      ctx.fail(`Cannot subscribe to ${f}: ${brief(err)}`);
      renderSubs();
    }
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
        setOutcome(`Not valid JSON: ${exc.message}`, 'bad');
        return;
      }
    }
    setOutcome(`Publishing to ${topic}…`);
    try {
      const ack = await sub.publish(topic, message, { idempotencyKey: idemInput.value.trim() || undefined });
      setOutcome(`Published to ${topic}: acknowledged, seq ${ack.seq}${ack.duplicate ? ' (duplicate)' : ''}.`, 'ok');
    } catch (err) {
      setOutcome(err instanceof ConnectionFailed ? `Publish to ${topic}: ${err.message}.` : `Publish failed: ${brief(err)}`, 'bad');
    }
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
  start([], null);
  return {
    el,
    dispose: () => {
      closed = true;
      clearTimeout(retryTimer);
      sub.close();
    },
  };
}
