// The dashboard's session on the JavaScript client (/sdk/flowgate.js, clients/js): sign-in, the signed-in
// client (it exchanges the key, refreshes the token, retries nothing: a person sees errors at once), errors in words.
// Credentials live in this tab only (memory and sessionStorage), never in a URL, cookie or localStorage.
import { AdminClient, Client, FlowGateError, Unauthorized } from '/sdk/flowgate.js';

const STORE = 'flowgate.session';

function at(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** A sentence for an error, saying which limit, when to retry or what is down. */
export function describe(err) {
  if (!(err instanceof FlowGateError)) return `Unexpected error: ${err && err.message ? err.message : err}`;
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
      const wait = Number(d.retry_after);
      const when = Number.isFinite(wait) && !/retry/i.test(err.message) ? ` Retry in ${Math.ceil(wait)} s.` : '';
      return `Too many requests: ${err.message}.${when}`;
    }
    case 503: return `The message bus is unavailable (NATS unreachable); try again shortly. ${err.message}`;
    default: return `${err.message} (${err.status} ${err.code})`;
  }
}

/** True when the session's credential no longer works (a 401 even with a fresh token). */
export const isUnauthorized = (err) => err instanceof Unauthorized;

export class Session {
  constructor() {
    this.state = null; // {kind: 'user', apiKey, app, token, expiresAt, userId, prefix} | {kind: 'admin', adminKey}
    this.client = null; // a Client (user) or an AdminClient
    this.listeners = new Set();
    try { this.state = JSON.parse(sessionStorage.getItem(STORE) || 'null'); } catch { this.state = null; }
    if (this.state) this.client = this.build(this.state);
  }

  get kind() { return this.state ? this.state.kind : null; }

  build(state) {
    if (state.kind === 'admin') return new AdminClient(location.origin, state.adminKey, { retry: null });
    const client = new Client(location.origin, {
      apiKey: state.apiKey, app: state.app, retry: null,
      reconnect: { delay: 250, maxDelay: 3000, firstAttempts: null }, // the console never gives up
      token: state.token ? { token: state.token, expires_at: state.expiresAt, topic_prefix: state.prefix } : undefined,
      onToken: (t) => {  // keep the refreshed token for a reload of this tab
        if (this.client === client && this.kind === 'user') this.save({ ...this.state, token: t.token, expiresAt: t.expires_at });
      },
    });
    return client;
  }

  save(state) {
    this.state = state;
    if (state) sessionStorage.setItem(STORE, JSON.stringify(state));
    else sessionStorage.removeItem(STORE);
    for (const listener of this.listeners) listener(state);
  }

  onChange(listener) { this.listeners.add(listener); }

  async signInUser(apiKey, app) {
    const client = this.build({ kind: 'user', apiKey, app });
    const answer = await client.token();
    this.client = client;
    this.save({
      kind: 'user', apiKey, app: answer.app, token: answer.token, expiresAt: answer.expires_at,
      userId: answer.user_id, prefix: answer.topic_prefix,
    });
  }

  async signInAdmin(adminKey) {
    const client = this.build({ kind: 'admin', adminKey });
    await client.plans(); // proves the key
    this.client = client;
    this.save({ kind: 'admin', adminKey });
  }

  signOut() {
    if (this.client && this.client.close) this.client.close();
    this.client = null;
    this.save(null);
  }

  /** The key stopped working (revoked, user disabled or deleted): sign out and say why on the sign-in page. */
  expire(err) {
    this.lastError = `Signed out: ${describe(err)}`;
    this.signOut();
  }
}
