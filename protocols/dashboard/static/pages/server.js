// Server (admin): readiness, NATS, connections per protocol, messages per second, slow consumers, HTTP errors.
import { button, figure, fill, h, number, table } from '../dom.js';

const PERIOD = 3000;

export function render(ctx) {
  const body = h('div', {}, h('p', {}, 'Loading…'));
  const stamp = h('p', { class: 'hint' });
  const load = async () => {
    try {
      const st = await ctx.client.stats();
      const rate = st.per_second;
      const protocols = [...new Set([...Object.keys(st.connections), ...Object.keys(st.published), ...Object.keys(st.delivered)])].sort();
      fill(body,
        h('div', { class: 'figures' },
          figure('Ready', st.ready ? 'yes' : 'NO', st.ready ? 'streams ready' : 'NATS or streams not ready'),
          figure('NATS', st.nats ? 'connected' : 'DISCONNECTED'),
          figure('Connections', number(st.connections_total)),
          figure('Messages in', `${number(rate.published)}/s`, `${number(st.totals.published)} since start`),
          figure('Messages out', `${number(rate.delivered)}/s`, `${number(st.totals.delivered)} since start`),
          figure('Slow consumers', number(st.totals.slow_consumers), `${number(rate.slow_consumers)}/s`),
          figure('HTTP 4xx', `${number(rate.http_4xx)}/s`, `${number(st.totals.http_4xx)} since start`),
          figure('HTTP 5xx', `${number(rate.http_5xx)}/s`, `${number(st.totals.http_5xx)} since start`)),
        table('Per protocol (this process, since start)', ['Protocol', 'Connections', 'Published', 'Delivered', 'Slow consumers'],
          protocols.map((p) => h('tr', {}, h('td', {}, p), h('td', {}, number(st.connections[p] ?? 0)),
            h('td', {}, number(st.published[p] ?? 0)), h('td', {}, number(st.delivered[p] ?? 0)),
            h('td', {}, number(st.slow_consumers[p] ?? 0))))),
        Object.keys(st.rejected).length ? table('Rejected publishes by reason', ['Reason', 'Count'],
          Object.entries(st.rejected).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, number(v))))) : null);
      stamp.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${PERIOD / 1000} s.`;
    } catch (err) {
      ctx.fail(err);
    }
  };
  const timer = setInterval(load, PERIOD);
  load();
  return {
    el: h('section', {}, h('div', { class: 'title-row' }, h('h1', {}, 'Server'), button('Refresh', load)), stamp, body),
    dispose: () => clearInterval(timer),
  };
}
