// Usage: this period's figures, the rate limit and charts of usage over time (refreshed every 5 s).
import { button, fill, h } from '../dom.js';
import { usageCharts, usageFigures } from './usagefigures.js';

export function render(ctx) {
  const body = h('div', {}, h('p', {}, 'Loading usage…'));
  const load = async () => {
    try {
      const [u, history] = await Promise.all([
        ctx.client.usage(), ctx.client.usageHistory(),
      ]);
      fill(body, usageFigures(u), usageCharts(history),
        h('p', { class: 'hint' }, `Prices: ${Object.entries(u.prices).map(([k, v]) => `${k} ${v}`).join(', ')} unit(s). `
          + 'Counts from every replica arrive within a second.'));
    } catch (err) {
      ctx.fail(err);
    }
  };
  const timer = setInterval(load, 5000);
  load();
  const el = h('section', {}, h('div', { class: 'title-row' }, h('h1', {}, 'Usage'), button('Refresh', load)), body);
  return { el, dispose: () => clearInterval(timer) };
}
