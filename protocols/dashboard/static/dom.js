// DOM helpers: every string goes in as text (textContent / attributes), never as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.setAttribute('class', value);
    else if (name === 'text') el.textContent = String(value);
    else if (name === 'value' && 'value' in el) el.value = String(value);
    else if (name === 'checked') el.checked = Boolean(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child)); // a string becomes a text node
  }
}

/** h('button', {onclick, class}, 'text', child...) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  add(el, children);
  return el;
}

export function s(tag, props = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  add(el, children);
  return el;
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

let nextId = 0;

/** A labelled control: <label for> plus the control, with an optional hint tied by aria-describedby. */
export function field(label, control, hint) {
  nextId += 1;
  if (!control.id) control.id = `f${nextId}`;
  let note = null;
  if (hint) {
    note = h('small', { class: 'hint', id: `${control.id}-hint` }, hint);
    control.setAttribute('aria-describedby', note.id);
  }
  return h('div', { class: 'field' }, h('label', { class: 'label', for: control.id }, label), control, note);
}

export function input(props = {}) {
  return h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', ...props });
}

export function button(text, onclick, props = {}) {
  return h('button', { type: 'button', onclick, ...props }, text);
}

/** A form whose submit runs `onsubmit(form)` (no page reload), disabling its buttons meanwhile. */
export function form(props, onsubmit, ...children) {
  const el = h('form', { ...props, novalidate: true }, ...children);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const buttons = el.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await onsubmit(el);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return el;
}

export function table(caption, headers, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, 'None yet.')))));
}

export function figure(label, value, hint) {
  return h('div', { class: 'figure' }, h('div', { class: 'figure-label' }, label),
    h('div', { class: 'figure-value' }, value), hint ? h('div', { class: 'hint' }, hint) : null);
}

export function when(iso) {
  if (!iso) return '—';
  const d = typeof iso === 'number' ? new Date(iso * 1000) : new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function number(n) {
  return typeof n === 'number' ? n.toLocaleString() : String(n ?? '—');
}

export async function copy(text, note) {
  try {
    await navigator.clipboard.writeText(text);
    note('Copied to the clipboard.');
  } catch {
    note('Copy failed: select the text and copy it by hand.');
  }
}
