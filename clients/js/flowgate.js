// Flow-Gate JavaScript client: one dependency-free ES module for browsers and Node 20+.
//
//   import { Client } from "./flowgate.js";   // or "<gateway>/sdk/flowgate.js" in a page
//   const client = new Client("http://localhost:8080", { apiKey: KEY, app: "myapp" });
//   const seq = await client.publish("sensors/1", { t: 21.5 });
//   const sub = client.subscribe(["sensors/+"], { since: 0 });
//   for await (const msg of sub) console.log(msg.topic, msg.data, msg.seq);
//
// Tokens are exchanged at POST /token and refreshed before they expire (on a live
// WebSocket too: `token_expiring` is answered with `auth`). Requests are retried on
// 429, 503 and network errors, honouring Retry-After. Subscriptions reconnect with
// backoff and jitter and resume from the last seq each filter delivered: nothing is
// missed or repeated. Node 20 has no global WebSocket: pass one, e.g.
// `new Client(url, { apiKey, app, WebSocket: (await import("ws")).WebSocket })`.
// Times are in milliseconds unless a name says seconds.

export const VERSION = "0.1.0";

// -- errors ------------------------------------------------------------------------------------

export class FlowGateError extends Error {
  constructor(message, { status = 0, code = "", details = {} } = {}) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.details = details;
  }
}
export class ConnectionFailed extends FlowGateError {}
export class BadRequest extends FlowGateError {}
export class Unauthorized extends FlowGateError {}
export class PaymentRequired extends FlowGateError {
  get limit() { return this.details.limit ?? null; }
  get used() { return this.details.used ?? null; }
  get quota() { return this.details.quota ?? null; }
  get balance() { return this.details.balance ?? null; }
  get resetsAt() { return this.details.resets_at ?? null; }
}
export class Forbidden extends FlowGateError {}
export class NotFound extends FlowGateError {}
export class Conflict extends FlowGateError {}
export class PayloadTooLarge extends FlowGateError {}
export class RateLimited extends FlowGateError {
  get retryAfter() { const v = Number(this.details.retry_after); return Number.isFinite(v) ? v : null; }
}
export class Unavailable extends FlowGateError {
  get retryAfter() { const v = Number(this.details.retry_after); return Number.isFinite(v) ? v : null; }
}
export class ServerError extends FlowGateError {}

const BY_STATUS = {
  400: BadRequest, 401: Unauthorized, 402: PaymentRequired, 403: Forbidden, 404: NotFound,
  409: Conflict, 413: PayloadTooLarge, 429: RateLimited, 503: Unavailable,
};

/** The typed error of an HTTP error body or a WebSocket error frame. */
export function errorFromBody(status, body, retryAfter = null) {
  let inner = body && typeof body === "object" ? (body.error && typeof body.error === "object" ? body.error : body) : {};
  const details = {};
  for (const [k, v] of Object.entries(inner)) if (!["code", "message", "action", "error"].includes(k)) details[k] = v;
  let code = typeof inner.code === "string" ? inner.code : (typeof inner.error === "string" ? inner.error : "");
  if (retryAfter != null && details.retry_after == null) details.retry_after = retryAfter;
  const Cls = BY_STATUS[status] || (status >= 500 ? ServerError : FlowGateError);
  return new Cls(inner.message || `HTTP ${status}`, { status, code, details });
}

// -- helpers -----------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (low, high) => low + Math.random() * Math.max(0, high - low);

function decodeJwt(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

function tokenFrom(value) {
  if (typeof value !== "string") return value;
  const claims = decodeJwt(value);
  const prefix = claims.sub && claims.app ? `${claims.sub}_${claims.app}_` : "";
  return { token: value, expires_at: claims.exp ?? Date.now() / 1000 + 60, issued_at: claims.iat, topic_prefix: prefix };
}

/** MQTT matching: `+` one level, `#` the rest (`a/#` matches `a`); a wildcard-first filter skips `$` topics. */
export function topicMatches(filter, topic) {
  if ((filter[0] === "+" || filter[0] === "#") && topic.startsWith("$")) return false;
  const f = filter.split("/"), t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

function base64ToBytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// -- tokens ------------------------------------------------------------------------------------

class TokenSource {
  constructor(client, { apiKey, app, getToken, ttl, permissions, refreshMargin, token, onToken }) {
    if ((apiKey == null) === (getToken == null)) throw new TypeError("give either apiKey (with app) or getToken");
    Object.assign(this, { client, apiKey, app: app || "default", getToken, ttl, permissions, refreshMargin, onToken });
    this.current = token ? tokenFrom(token) : null;
    this.pending = null;
  }

  margin(token) {
    const issued = token.issued_at ?? decodeJwt(token.token).iat ?? token.expires_at - 60;
    return Math.min(this.refreshMargin, (token.expires_at - issued) / 2);
  }

  /** A token with life left in it; a new one when `force` or close to expiry. Concurrent callers share a refresh. */
  async get(force = false) {
    const current = this.current;
    if (!force && current && current.expires_at - Date.now() / 1000 > this.margin(current)) return current;
    if (!this.pending) {
      this.pending = this.fetch().then(
        (token) => { this.current = token; this.pending = null; this.onToken?.(token); return token; },
        (error) => { this.pending = null; throw error; },
      );
    }
    return this.pending;
  }

  async fetch() {
    if (this.getToken) return tokenFrom(await this.getToken());
    const body = { app: this.app };
    if (this.ttl != null) body.ttl = this.ttl;
    if (this.permissions != null) body.permissions = this.permissions;
    return tokenFrom(await this.client.request("POST", "/token", { body, headers: { Authorization: `Bearer ${this.apiKey}` } }));
  }
}

// -- clients -----------------------------------------------------------------------------------

const DEFAULT_RETRY = { maxRetries: 4, delay: 200, maxDelay: 10000, statuses: [429, 503], connectionErrors: true };
const NO_RETRY = { ...DEFAULT_RETRY, maxRetries: 0 };

class Base {
  constructor(baseUrl, { retry = DEFAULT_RETRY, fetch: fetchImpl, timeout = 10000 } = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.retry = retry === null ? NO_RETRY : { ...DEFAULT_RETRY, ...retry };
    this.fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this.timeout = timeout;
  }

  get wsUrl() { return this.baseUrl.replace(/^http/, "ws"); }

  /** The gateway's public facts (GET /api/v1/info: version, ports such as mqtt_port). */
  info() { return this.request("GET", "/api/v1/info"); }

  /** One request with retries; the decoded JSON answer (null when empty) or a typed error. */
  async request(method, path, { body, headers = {}, bearer, params, timeout } = {}) {
    let attempt = 0, refreshed = false;
    let url = this.baseUrl + path;
    if (params) url += "?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v != null)).toString();
    for (;;) {
      const all = { ...headers };
      if (body !== undefined) all["Content-Type"] = "application/json";
      if (bearer) all.Authorization = `Bearer ${await bearer(false)}`;
      let response;
      try {
        response = await this.fetch(url, {
          method, headers: all, body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(timeout ?? this.timeout),
        });
      } catch (error) {
        if (this.retry.connectionErrors && attempt < this.retry.maxRetries) {
          await sleep(jitter(0, Math.min(this.retry.maxDelay, this.retry.delay * 2 ** attempt++)));
          continue;
        }
        throw new ConnectionFailed(`${method} ${url}: ${error && error.message}`, { details: { cause: String(error) } });
      }
      if (response.ok) {
        const text = await response.text();
        return text ? JSON.parse(text) : null;
      }
      const retryAfter = response.headers.get("Retry-After");
      if (response.status === 401 && bearer && !refreshed) {
        refreshed = true;
        await bearer(true);
        continue;
      }
      if (this.retry.statuses.includes(response.status) && attempt < this.retry.maxRetries) {
        const seconds = Number(retryAfter);
        const wait = retryAfter != null && Number.isFinite(seconds)
          ? Math.min(this.retry.maxDelay, seconds * 1000)
          : jitter(0, Math.min(this.retry.maxDelay, this.retry.delay * 2 ** attempt));
        attempt++;
        await sleep(wait);
        continue;
      }
      let parsed = null;
      try { parsed = await response.json(); } catch { parsed = { error: { message: response.statusText } }; }
      throw errorFromBody(response.status, parsed, retryAfter);
    }
  }
}

export class Client extends Base {
  /**
   * @param {string} baseUrl  e.g. "http://localhost:8080" (a page may pass location.origin)
   * @param {object} options  apiKey + app, or getToken (async () => JWT string or token answer);
   *   ttl, permissions, retry ({maxRetries, delay, maxDelay} or null), reconnect ({delay, maxDelay}),
   *   WebSocket (a constructor, for Node 20), fetch, timeout, refreshMargin (seconds),
   *   token (a token answer to start with, e.g. kept by a page across reloads), onToken (called with each new one)
   */
  constructor(baseUrl, options = {}) {
    super(baseUrl, options);
    this.tokens = new TokenSource(this, { refreshMargin: 60, ...options });
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.reconnect = { delay: 100, maxDelay: 5000, ...(options.reconnect || {}) };
    this.subscriptions = new Set();
  }

  authed(method, path, options = {}) {
    return this.request(method, path, { ...options, bearer: (force) => this.tokens.get(force).then((t) => t.token) });
  }

  /** Any API route with the token (refreshed as needed), for what has no method here: call("GET", "/api/v1/..."). */
  call(method, path, { body, params } = {}) { return this.authed(method, path, { body, params }); }

  /** The current token answer ({token, expires_at, topic_prefix, ...}). */
  token() { return this.tokens.get(); }

  /** A new token now (the previous one stays valid until it expires). */
  refreshToken() { return this.tokens.get(true); }

  /** Publish; resolves to the seq it was stored under. */
  async publish(topic, message, options = {}) { return (await this.publishResult(topic, message, options)).seq; }

  /** Publish; the whole answer {topic, seq, duplicate}. A retried request is stored once (an idempotency key is generated). */
  publishResult(topic, message, { idempotencyKey } = {}) {
    const key = idempotencyKey || (globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`);
    return this.authed("POST", "/api/v1/publish", { body: { topic, message }, headers: { "Idempotency-Key": key } });
  }

  /** Subscribe to one or more filters over the WebSocket; see Subscription. */
  subscribe(filters, options = {}) {
    const sub = new Subscription(this, typeof filters === "string" ? [filters] : [...filters], options);
    this.subscriptions.add(sub);
    return sub;
  }

  queue(name) { return new Queue(this, name); }
  async queues() { return (await this.authed("GET", "/api/v1/queues")).queues; }
  usage() { return this.authed("GET", "/api/v1/usage"); }
  /** Units per hour (last 48 h) and per day (this period): {hourly, daily, period}. */
  usageHistory() { return this.authed("GET", "/api/v1/usage/history"); }
  async keys() { return (await this.authed("GET", "/api/v1/keys")).keys; }
  createKey(name, rateLimit) { return this.authed("POST", "/api/v1/keys", { body: rateLimit ? { name, rate_limit: rateLimit } : { name } }); }
  deleteKey(id) { return this.authed("DELETE", `/api/v1/keys/${encodeURIComponent(id)}`); }

  close() { for (const sub of this.subscriptions) sub.close(); }
}

export class AdminClient extends Base {
  constructor(baseUrl, adminKey, options = {}) {
    super(baseUrl, options);
    this.adminKey = adminKey;
  }

  admin(method, path, options = {}) {
    return this.request(method, "/api/v1/admin" + path, { ...options, bearer: async () => this.adminKey });
  }

  createUser(userId, plan = "free") { return this.admin("POST", "/users", { body: { user_id: userId, plan } }); }
  async users() { return (await this.admin("GET", "/users")).users; }
  user(userId) { return this.admin("GET", `/users/${encodeURIComponent(userId)}`); }
  updateUser(userId, changes) { return this.admin("PATCH", `/users/${encodeURIComponent(userId)}`, { body: changes }); }
  deleteUser(userId) { return this.admin("DELETE", `/users/${encodeURIComponent(userId)}`); }
  createKey(userId, name = "default", rateLimit) {
    return this.admin("POST", `/users/${encodeURIComponent(userId)}/keys`, { body: rateLimit ? { name, rate_limit: rateLimit } : { name } });
  }
  async keys(userId) { return (await this.admin("GET", `/users/${encodeURIComponent(userId)}/keys`)).keys; }
  deleteKey(userId, keyId) { return this.admin("DELETE", `/users/${encodeURIComponent(userId)}/keys/${encodeURIComponent(keyId)}`); }
  /** The configured plans and prices: {plans: [{name, quota, rate, burst, max_connections, max_message_bytes}], prices}. */
  plans() { return this.admin("GET", "/plans"); }
  addCredits(userId, amount) { return this.admin("POST", `/users/${encodeURIComponent(userId)}/credits`, { body: { amount } }); }
  usage(userId) { return this.admin("GET", `/users/${encodeURIComponent(userId)}/usage`); }
  usageHistory(userId) { return this.admin("GET", `/users/${encodeURIComponent(userId)}/usage/history`); }
  /** The live server view: readiness, NATS, connections and messages per protocol, rates, slow consumers, HTTP errors. */
  stats() { return this.admin("GET", "/stats"); }
}

// -- subscriptions -----------------------------------------------------------------------------

/** One message: `data` keeps its type (string, JSON value, or Uint8Array for binary). */
function toMessage(frame) {
  const data = frame.encoding === "base64" && typeof frame.data === "string" ? base64ToBytes(frame.data) : frame.data;
  return { topic: frame.topic, data, seq: frame.seq, publishedAt: frame.published_at ? new Date(frame.published_at) : null };
}

const SEEN_WINDOW = 100000;

/**
 * A subscription that survives reconnects. `await sub.ready` (all filters subscribed), then
 * `for await (const msg of sub)` or `onMessage`; gaps (retention removed part of a replay) go to
 * `onGap` and `sub.gaps`; `onStatus` hears the connection's state ("connecting", "connected",
 * "reconnecting" with the attempt, the wait and the close code, "closed" with what ended it);
 * `sub.add(filter, { since })` and `sub.remove(filter)` change the filters on the live connection;
 * `sub.close()` ends it. A subscription may start with no filter (it then connects and waits).
 */
export class Subscription {
  constructor(client, filters, { since = null, onMessage, onGap, onError, onStatus, reconnect } = {}) {
    if (!client.WebSocket) throw new TypeError("no WebSocket: pass one to the Client (e.g. the ws package on Node 20)");
    Object.assign(this, { client, filters: [...filters], onMessage, onGap, onError, onStatus });
    this.reconnect = { ...client.reconnect, ...(reconnect || {}) };
    this.last = new Map(filters.map((f) => [f, since]));
    this.lastSeq = since;
    this.gaps = [];
    this.connections = 0;
    this.closed = false;
    this.items = [];
    this.waiters = [];
    this.seen = new Set();
    this.seenOrder = [];
    this.replays = new Map();  // filter -> {cursor, upTo}: a replay asked by add(..., {since}) repeats what was seen
    this.adds = new Map();     // filter -> [{resolve, reject}] of add() calls waiting for the ack
    this.pending = new Map();  // subscribe frame id -> filter, on the current connection
    this.quiet = new Set();    // unsubscribe frame ids whose answer nobody waits for
    this.publishes = new Map(); // publish frame id -> {resolve, reject}, on the current connection
    this.failures = 0;
    this.forceToken = false;
    this.prefix = "";
    this.ids = 0;
    this.ready = new Promise((resolve, reject) => { this.resolveReady = resolve; this.rejectReady = reject; });
    this.ready.catch(() => {});
    this.connect();
  }

  /** True while the WebSocket is open. */
  get connected() { return !!this.ws && this.ws.readyState === 1 && !this.closed; }

  status(state, details = {}) { this.onStatus?.({ state, ...details }); }

  sendSubscribe(ws, filter, since) {
    const id = ++this.ids;
    this.pending.set(id, filter);
    const frame = { action: "subscribe", topic: filter, id };
    if (since != null) frame.since = since;
    ws.send(JSON.stringify(frame));
  }

  /** Subscribe one more filter (from after `since` when given, replaying what was already seen); resolves on its ack. */
  add(filter, { since = null } = {}) {
    if (this.closed) return Promise.reject(new ConnectionFailed("the subscription is closed"));
    if (!this.filters.includes(filter)) this.filters.push(filter);
    if (since != null) {
      this.last.set(filter, since);
      if (this.lastSeq != null && since < this.lastSeq) this.replays.set(filter, { cursor: since, upTo: this.lastSeq });
    } else if (!this.last.has(filter)) {
      this.last.set(filter, null);
    }
    const done = new Promise((resolve, reject) => {
      if (!this.adds.has(filter)) this.adds.set(filter, []);
      this.adds.get(filter).push({ resolve, reject });
    });
    if (this.connected) this.sendSubscribe(this.ws, filter, since);  // else on (re)connection
    return done;
  }

  /**
   * Publish on this subscription's WebSocket (no HTTP request); resolves to the acknowledgement
   * {topic, seq, duplicate} once JetStream stored it, rejects with the typed error (RateLimited with
   * retryAfter, PaymentRequired, BadRequest...) or ConnectionFailed when not connected or closed before the ack.
   */
  publish(topic, message, { idempotencyKey } = {}) {
    if (!this.connected) return Promise.reject(new ConnectionFailed("not connected: the message was not sent"));
    const id = ++this.ids;
    const frame = { action: "publish", id, topic, message };
    if (idempotencyKey) frame.idempotency_key = idempotencyKey;
    return new Promise((resolve, reject) => {
      this.publishes.set(id, { resolve, reject });
      this.ws.send(JSON.stringify(frame));
    });
  }

  unacknowledged(why) {
    for (const waiter of this.publishes.values()) waiter.reject(new ConnectionFailed(`${why} before the acknowledgement`));
    this.publishes.clear();
  }

  /** Stop following `filter`. */
  remove(filter) {
    this.filters = this.filters.filter((f) => f !== filter);
    this.last.delete(filter);
    this.replays.delete(filter);
    for (const waiter of this.adds.get(filter) || []) waiter.reject(new ConnectionFailed(`unsubscribed from ${filter}`));
    this.adds.delete(filter);
    if (this.connected) {
      const id = ++this.ids;
      this.quiet.add(id);
      this.ws.send(JSON.stringify({ action: "unsubscribe", topic: filter, id }));
    }
  }

  settle(filter, error) {
    const waiters = this.adds.get(filter);
    if (!waiters) return false;
    this.adds.delete(filter);
    for (const waiter of waiters) (error ? waiter.reject(error) : waiter.resolve(filter));
    return true;
  }

  async connect() {
    if (this.closed) return;
    this.status("connecting", { attempt: this.failures + 1 });
    let token;
    const fresh = this.forceToken;
    try {
      token = await this.client.tokens.get(fresh);
      this.forceToken = false;
    } catch (error) {
      if (error instanceof ConnectionFailed || error instanceof RateLimited || error instanceof Unavailable) {
        return this.retryLater({ error });
      }
      return this.fail(error);
    }
    if (this.closed) return;
    this.prefix = token.topic_prefix || "";
    const ws = new this.client.WebSocket(`${this.client.wsUrl}/ws?token=${encodeURIComponent(token.token)}`);
    this.ws = ws;
    this.pending = new Map();
    let subscribed = false;
    const allSubscribed = () => {
      if (subscribed || this.pending.size) return;
      subscribed = true;
      this.resolveReady(this);
    };
    ws.onopen = () => {
      this.connections++;
      this.failures = 0;
      this.status("connected", { connections: this.connections });
      for (const filter of this.filters) {
        const replay = this.replays.get(filter);
        this.sendSubscribe(ws, filter, replay ? replay.cursor : (this.last.get(filter) ?? this.lastSeq));
      }
      allSubscribed();
    };
    ws.onmessage = (event) => {
      const frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      switch (frame.action) {
        case "message": return this.deliver(toMessage(frame));
        case "ack": {
          if (this.quiet.delete(frame.id)) return;
          const published = this.publishes.get(frame.id);
          if (published) {
            this.publishes.delete(frame.id);
            return published.resolve({ topic: frame.topic, seq: frame.seq, duplicate: !!frame.duplicate });
          }
          const filter = this.pending.get(frame.id);
          if (filter === undefined) return;
          this.pending.delete(frame.id);
          this.settle(filter);
          return allSubscribed();
        }
        case "token_expiring":
          return this.client.tokens.get(true).then(
            (t) => ws.readyState === 1 && ws.send(JSON.stringify({ action: "auth", token: t.token, id: ++this.ids })),
            (error) => this.onError?.(error),
          );
        case "gap": {
          const gap = { topic: frame.topic, requestedSeq: frame.requested_seq, firstAvailableSeq: frame.first_available_seq };
          this.gaps.push(gap);
          return this.onGap?.(gap);
        }
        case "error": {
          const error = errorFromBody(frame.code, frame);
          if (this.quiet.delete(frame.id)) return;
          const refused = this.publishes.get(frame.id);
          if (refused) {
            this.publishes.delete(frame.id);
            return refused.reject(error);
          }
          const filter = this.pending.get(frame.id);
          if (filter !== undefined) {
            if (!this.filters.includes(filter)) { this.pending.delete(frame.id); return allSubscribed(); }  // removed meanwhile
            // a filter refused: for now (503 bus unavailable, 429): reconnect later; for good (403, 400...):
            // an added filter is dropped and its add() rejects, a filter given at the start ends the subscription
            if (error instanceof Unavailable || error instanceof RateLimited) return ws.close(4000, "retry");
            this.pending.delete(frame.id);
            if (this.adds.has(filter)) {
              this.filters = this.filters.filter((f) => f !== filter);
              this.last.delete(filter);
              this.replays.delete(filter);
              this.settle(filter, error);
              return allSubscribed();
            }
            return this.fail(error);
          }
          return this.onError?.(error);
        }
      }
    };
    ws.onerror = () => {};  // a close event follows
    ws.onclose = (event) => {
      if (this.closed || this.ws !== ws) return;
      this.unacknowledged(`the connection closed (${event.code})`);
      const closing = { code: event.code, reason: event.reason };
      if (event.code === 4402) {
        return this.fail(new PaymentRequired(event.reason || "payment required", { status: 402, code: "payment_required" }), closing);
      }
      if (event.code === 4401 && fresh && !subscribed) {
        return this.fail(new Unauthorized(`a new token was refused too: ${event.reason}`, { status: 401, code: "unauthorized" }), closing);
      }
      if (event.code === 4401) this.forceToken = true;
      this.retryLater(closing);
    };
  }

  retryLater(why = {}) {
    if (this.closed) return;
    const { delay, maxDelay, maxAttempts, firstAttempts = 5 } = this.reconnect;
    const limit = this.connections ? maxAttempts : firstAttempts;
    if (limit != null && this.failures >= limit) {
      return this.fail(new ConnectionFailed(`gave up after ${this.failures} failed connection attempts`), why);
    }
    const wait = jitter(delay / 2, Math.min(maxDelay, delay * 2 ** Math.min(this.failures, 16)));
    this.failures++;
    this.status("reconnecting", { attempt: this.failures, delay: wait, ...why });
    setTimeout(() => this.connect(), wait);
  }

  short(filter) { return this.prefix && filter.startsWith(this.prefix) ? filter.slice(this.prefix.length) : filter; }

  deliver(message) {
    let replayed = false;
    for (const filter of this.filters) {
      if (topicMatches(this.short(filter), message.topic)) {
        const last = this.last.get(filter);
        if (last == null || message.seq > last) this.last.set(filter, message.seq);
        const replay = this.replays.get(filter);
        if (replay && message.seq > replay.cursor && message.seq <= replay.upTo) {
          replayed = true;
          replay.cursor = message.seq;
        }
        if (replay && message.seq >= replay.upTo) this.replays.delete(filter);
      }
    }
    if (this.lastSeq == null || message.seq > this.lastSeq) this.lastSeq = message.seq;
    if (this.seen.has(message.seq) && !replayed) return;
    if (!this.seen.has(message.seq)) {
      this.seen.add(message.seq);
      this.seenOrder.push(message.seq);
      if (this.seenOrder.length > SEEN_WINDOW) this.seen.delete(this.seenOrder.shift());
    }
    if (this.onMessage) this.onMessage(message);
    this.push({ value: message, done: false });
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  fail(error, why = {}) {
    this.rejectReady(error);
    this.onError?.(error);
    this.failure = error;
    this.end(error, why);
    for (const waiter of this.waiters.splice(0)) waiter({ error });
  }

  /** The next message ({value, done}); rejects with what ended the subscription for good. */
  async next() {
    const item = this.items.shift() ?? (this.closed ? (this.failure ? { error: this.failure } : { value: undefined, done: true }) : await new Promise((r) => this.waiters.push(r)));
    if (item.error) throw item.error;
    return item;
  }

  [Symbol.asyncIterator]() { return { next: () => this.next(), return: async () => { this.close(); return { value: undefined, done: true }; } }; }

  close() { this.end(null); }

  end(error, why = {}) {
    if (this.closed) return;
    this.closed = true;
    this.client.subscriptions.delete(this);
    try { this.ws?.close(1000); } catch { /* already closed */ }
    this.unacknowledged("the subscription was closed");
    const ended = error || new ConnectionFailed("the subscription is closed");
    for (const filter of [...this.adds.keys()]) this.settle(filter, ended);
    this.status("closed", error ? { error, ...why } : why);
    if (!this.failure) for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
  }
}

// -- queues ------------------------------------------------------------------------------------

export class Queue {
  constructor(client, name) { this.client = client; this.name = name; }

  call(method, suffix = "", options = {}) {
    return this.client.authed(method, `/api/v1/queues/${encodeURIComponent(this.name)}${suffix}`, options);
  }

  /** Send one message ({delaySeconds, attributes}); resolves to {message_id, md5_of_body, seq}. */
  send(body, { delaySeconds, attributes } = {}) {
    const doc = { body };
    if (delaySeconds != null) doc.delay_seconds = delaySeconds;
    if (attributes) doc.attributes = attributes;
    return this.call("POST", "/messages", { body: doc });
  }

  /** Up to 10 messages (strings or {id, body, delay_seconds, attributes}); resolves to {successful, failed}. */
  sendBatch(entries) {
    return this.call("POST", "/messages/batch", {
      body: { entries: entries.map((e, i) => (typeof e === "string" ? { id: String(i), body: e } : { id: String(i), ...e })) },
    });
  }

  async receive({ max = 1, wait = 0, visibilityTimeout } = {}) {
    const body = { max, wait };
    if (visibilityTimeout != null) body.visibility_timeout = visibilityTimeout;
    const answer = await this.call("POST", "/messages/receive", { body, timeout: (wait + 10) * 1000 });
    return answer.messages.map((m) => new QueueMessage(this, m));
  }

  /** Receive forever with long polls of `wait` seconds. */
  async *messages({ wait = 20, max = 10, visibilityTimeout } = {}) {
    for (;;) yield* await this.receive({ max, wait, visibilityTimeout });
  }

  deleteMessage(receiptHandle) { return this.call("DELETE", `/messages/${encodeURIComponent(receiptHandle)}`); }
  changeVisibility(receiptHandle, seconds) {
    return this.call("PATCH", `/messages/${encodeURIComponent(receiptHandle)}`, { body: { visibility_timeout: seconds } });
  }
  /** Create the queue or update its attributes ({visibility_timeout, redrive_policy, ...}). */
  create(attributes = {}) { return this.call("PUT", "", { body: attributes }); }
  attributes() { return this.call("GET"); }
  purge() { return this.call("POST", "/purge"); }
  delete() { return this.call("DELETE"); }
}

export class QueueMessage {
  constructor(queue, m) {
    this.queue = queue;
    this.messageId = m.message_id;
    this.receiptHandle = m.receipt_handle;
    this.body = m.body;
    this.encoding = m.encoding ?? null;  // "base64" when the body was binary
    this.md5OfBody = m.md5_of_body;
    this.attributes = m.attributes || {};
    this.receiveCount = m.receive_count;
    this.sentAt = m.sent_at;
  }
  delete() { return this.queue.deleteMessage(this.receiptHandle); }
  /** Visible again after `delaySeconds` (0 = now). */
  release(delaySeconds = 0) { return this.queue.changeVisibility(this.receiptHandle, delaySeconds); }
  changeVisibility(seconds) { return this.queue.changeVisibility(this.receiptHandle, seconds); }
}
