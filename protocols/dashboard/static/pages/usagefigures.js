// Usage figures and charts, shared by the user's Usage page and the admin's user page.
import { barChart, dayLabel, hourLabel } from '../chart.js';
import { figure, h, number, when } from '../dom.js';

export function usageFigures(u) {
  const rate = u.rate_limit || {};
  return h('div', { class: 'figures' },
    figure('Used this period', number(u.used), `period ${u.period.id}`),
    figure('Quota', number(u.quota), `plan ${u.plan}`),
    figure('Remaining', number(u.remaining)),
    figure('Balance', `${number(u.balance)} credits`),
    figure('Resets', when(u.resets_at)),
    figure('Rate limit', `${number(rate.rate)}/s`, `burst ${number(rate.burst)}, ${number(rate.remaining)} left now`),
    figure('Connections', number(u.connections), `at most ${number(u.limits && u.limits.max_connections)}`),
    figure('Largest message', `${number(u.limits && u.limits.max_message_bytes)} B`));
}

export function usageCharts(history) {
  return h('div', { class: 'charts' },
    barChart('Units per hour, last 48 hours', history.hourly, hourLabel),
    barChart(`Units per day, period ${history.period.id}`, history.daily, dayLabel));
}
