// The dashboard's HTTP client: sign-in, the token and its refresh, and errors in words.
// Credentials live in this tab only (memory and sessionStorage), never in a URL, cookie or localStorage.

const STORE = 'flowgate.session';
const REFRESH_MARGIN = 60; // seconds before expiry

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function at(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** A sentence for an error, saying which limit, when to retry or what is down. */
export function describe(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err && err.message ? err.message : err}`;
  const d = err.details;
  switch (err.status) {
    case 0: return `Cannot reach the gateway: ${err.message}`;
    case 402: {
      const limit = d.limit === 'monthly_quota' ? 'monthly quota' : (d.limit || 'plan limit').replaceAll('_', ' ');
      const parts = [`Limit reached (${limit}): ${err.message}`];
      if (d.used !== undefined && d.quota !== undefined) parts.push(`used ${d.used} of ${d.quota}`);
      if (d.balance !== undefined) parts.push(`balance ${d.balance}`);
      if (d.resets_at) parts.push(`resets ${at(d.resets_at)}`);
      return parts.join('; ') + '.';
    }
    case 429: {
      const wait = d.retry_after;
      const when = wait !== undefined && !/retry/i.test(err.message) ? ` Retry in ${Math.ceil(wait)} s.` : '';
      return `Too many requests: ${err.message}.${when}`;
    }
    case 503: return `The message bus is unavailable (NATS unreachable); try again shortly. ${err.message}`;
    default: return `${err.message} (${err.status} ${err.code})`;
  }
}

async function send(method, path, { auth, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (auth) init.headers.Authorization = `Bearer ${auth}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiError(0, 'network', String(exc.message || exc));
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { code: 'error', message: text } }; }
  if (!response.ok) {
    const e = (data && data.error) || {};
    const details = { ...e };
    const retry = response.headers.get('Retry-After');
    if (retry !== null && details.retry_after === undefined) details.retry_after = Number(retry);
    throw new ApiError(response.status, e.code || 'error', e.message || response.statusText, details);
  }
  return data;
}

export class Session {
  constructor() {
    this.state = null; // {kind: 'user', apiKey, app, token, expiresAt, userId, prefix} | {kind: 'admin', adminKey}
    this.timer = null;
    this.listeners = new Set();
    try { this.state = JSON.parse(sessionStorage.getItem(STORE) || 'null'); } catch { this.state = null; }
    if (this.state && this.state.kind === 'user') this.schedule();
  }

  get kind() { return this.state ? this.state.kind : null; }

  save(state) {
    this.state = state;
    if (state) sessionStorage.setItem(STORE, JSON.stringify(state));
    else sessionStorage.removeItem(STORE);
    for (const listener of this.listeners) listener(state);
  }

  onChange(listener) { this.listeners.add(listener); }

  async signInUser(apiKey, app) {
    const answer = await send('POST', '/token', { auth: apiKey, body: { app } });
    this.save({
      kind: 'user', apiKey, app: answer.app, token: answer.token, expiresAt: answer.expires_at,
      userId: answer.user_id, prefix: answer.topic_prefix,
    });
    this.schedule();
  }

  async signInAdmin(adminKey) {
    await send('GET', '/api/v1/admin/plans', { auth: adminKey });
    this.save({ kind: 'admin', adminKey });
  }

  signOut() {
    clearTimeout(this.timer);
    this.save(null);
  }

  /** A fresh token for the signed-in key (used before expiry, on 401 and by the console). */
  async refresh() {
    const st = this.state;
    if (!st || st.kind !== 'user') throw new ApiError(401, 'unauthorized', 'not signed in');
    const answer = await send('POST', '/token', { auth: st.apiKey, body: { app: st.app } });
    this.save({ ...st, token: answer.token, expiresAt: answer.expires_at });
    this.schedule();
    return answer.token;
  }

  schedule() {
    clearTimeout(this.timer);
    const st = this.state;
    if (!st || st.kind !== 'user') return;
    const wait = Math.max(5, st.expiresAt - Date.now() / 1000 - REFRESH_MARGIN);
    this.timer = setTimeout(() => {
      this.refresh().catch((err) => {
        if (err.status === 401) this.expire(err);
        else this.schedule();
      });
    }, wait * 1000);
  }

  expire(err) {
    clearTimeout(this.timer);
    this.save(null);
    this.lastError = `Signed out: ${describe(err)}`;
  }

  /** A token that is valid for at least a few more seconds. */
  async token() {
    const st = this.state;
    if (st.expiresAt - Date.now() / 1000 < 10) return this.refresh();
    return st.token;
  }

  credential() {
    const st = this.state;
    if (!st) throw new ApiError(401, 'unauthorized', 'not signed in');
    return st.kind === 'admin' ? st.adminKey : st.token;
  }

  /** Call the API with this session's credential; a user's expired token is refreshed once. */
  async call(method, path, body) {
    try {
      return await send(method, path, { auth: this.credential(), body });
    } catch (err) {
      if (err.status === 401 && this.kind === 'user') {
        try {
          await this.refresh();
        } catch (refreshError) {
          if (refreshError.status === 401) this.expire(refreshError);
          throw refreshError;
        }
        return send(method, path, { auth: this.credential(), body });
      }
      throw err;
    }
  }
}

export const enc = encodeURIComponent;
