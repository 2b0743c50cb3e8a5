// Plans (admin): the configured plans and unit prices.
import { fill, h, number, table } from '../dom.js';

export function render(ctx) {
  const body = h('div', {}, h('p', {}, 'Loading plans…'));
  ctx.client.plans().then(({ plans, prices }) => {
    fill(body,
      table('Plans', ['Plan', 'Monthly quota (units)', 'Rate (msg/s)', 'Burst', 'Connections', 'Largest message (bytes)'],
        plans.map((p) => h('tr', {}, h('td', {}, h('code', {}, p.name)), h('td', {}, number(p.quota)), h('td', {}, number(p.rate)),
          h('td', {}, number(p.burst)), h('td', {}, number(p.max_connections)), h('td', {}, number(p.max_message_bytes))))),
      h('p', {}, `Prices in units: ${Object.entries(prices).map(([k, v]) => `${k.replace('_', ' ')} ${v}`).join(', ')}.`),
      h('p', { class: 'hint' }, 'Plans come from FLOWGATE_PLANS_FILE (or the built-in free and pro).'));
  }).catch(ctx.fail);
  return { el: h('section', {}, h('h1', {}, 'Plans'), body) };
}
