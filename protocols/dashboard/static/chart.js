// A bar chart as inline SVG built with DOM calls; each bar has a <title> tooltip.
import { h, s } from './dom.js';

export function barChart(title, points, labelOf) {
  const width = 720;
  const height = 180;
  const pad = 28;
  const max = Math.max(1, ...points.map((p) => p.units));
  const bw = (width - pad) / Math.max(1, points.length);
  const total = points.reduce((sum, p) => sum + p.units, 0);
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height + 20}`, role: 'img', class: 'chart',
    'aria-label': `${title}: ${total.toLocaleString()} units in ${points.length} bars, at most ${max.toLocaleString()}`,
  });
  svg.append(s('line', { x1: pad, y1: height, x2: width, y2: height, class: 'axis' }));
  svg.append(s('text', { x: 0, y: 12, class: 'tick' }, max.toLocaleString()));
  svg.append(s('text', { x: 0, y: height, class: 'tick' }, '0'));
  points.forEach((p, i) => {
    const barHeight = Math.round((p.units / max) * (height - 16));
    const rect = s('rect', {
      x: (pad + i * bw + 1).toFixed(1), y: height - barHeight, width: Math.max(1, bw - 2).toFixed(1),
      height: barHeight, class: 'bar',
    }, s('title', {}, `${labelOf(p)}: ${p.units.toLocaleString()} units`));
    svg.append(rect);
  });
  const first = points[0];
  const last = points[points.length - 1];
  if (first) svg.append(s('text', { x: pad, y: height + 16, class: 'tick' }, labelOf(first)));
  if (last) svg.append(s('text', { x: width, y: height + 16, class: 'tick', 'text-anchor': 'end' }, labelOf(last)));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, title), svg);
}

export function hourLabel(p) {
  const d = new Date(p.start);
  return `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${String(d.getHours()).padStart(2, '0')}:00`;
}

export function dayLabel(p) {
  return p.date;
}
