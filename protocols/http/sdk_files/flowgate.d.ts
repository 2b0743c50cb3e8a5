// Type declarations of flowgate.js, the Flow-Gate JavaScript client.

export const VERSION: string;

export interface ErrorInit { status?: number; code?: string; details?: Record<string, unknown>; }
export class FlowGateError extends Error {
  constructor(message: string, init?: ErrorInit);
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown>;
}
export class ConnectionFailed extends FlowGateError {}
export class BadRequest extends FlowGateError {}
export class Unauthorized extends FlowGateError {}
export class PaymentRequired extends FlowGateError {
  readonly limit: "monthly_quota" | "balance" | "max_connections" | string | null;
  readonly used: number | null;
  readonly quota: number | null;
  readonly balance: number | null;
  readonly resetsAt: string | null;
}
export class Forbidden extends FlowGateError {}
export class NotFound extends FlowGateError {}
export class Conflict extends FlowGateError {}
export class PayloadTooLarge extends FlowGateError {}
export class RateLimited extends FlowGateError { readonly retryAfter: number | null; }
export class Unavailable extends FlowGateError { readonly retryAfter: number | null; }
export class ServerError extends FlowGateError {}
export function errorFromBody(status: number, body: unknown, retryAfter?: string | null): FlowGateError;
export function topicMatches(filter: string, topic: string): boolean;

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface TokenAnswer {
  token: string;
  expires_at: number;
  topic_prefix: string;
  user_id?: string;
  app?: string;
  issued_at?: number;
}

export interface RetryOptions {
  /** Retries after the first attempt (default 4; 0 or `retry: null` turns retries off). */
  maxRetries?: number;
  /** First backoff in ms, doubled per attempt with full jitter (default 200). */
  delay?: number;
  /** Cap of one wait in ms, a Retry-After included (default 10000). */
  maxDelay?: number;
  statuses?: number[];
  connectionErrors?: boolean;
}

export interface ReconnectOptions {
  /** First backoff in ms, doubled per failure up to maxDelay, with jitter (defaults 100 and 5000). */
  delay?: number;
  maxDelay?: number;
  /** Consecutive failed attempts before giving up once connected (default: never). */
  maxAttempts?: number | null;
  /** Failed attempts before the first connection gives up (default 5). */
  firstAttempts?: number | null;
}

export interface WebSocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  apiKey?: string;
  app?: string;
  getToken?: () => Promise<string | TokenAnswer>;
  ttl?: number;
  permissions?: Record<string, unknown>;
  retry?: RetryOptions | null;
  reconnect?: ReconnectOptions;
  /** Required on Node 20 (no global WebSocket): e.g. `(await import("ws")).WebSocket`. */
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
  /** Request timeout in ms (default 10000). */
  timeout?: number;
  /** Refresh tokens this many seconds before expiry (at half-life for shorter tokens; default 60). */
  refreshMargin?: number;
  /** A token answer to start with (e.g. one a page kept in sessionStorage across a reload). */
  token?: TokenAnswer;
  /** Called with every new token answer (exchange and refresh). */
  onToken?: (token: TokenAnswer) => void;
}

export interface PublishResult { topic: string; seq: number; duplicate: boolean; }

export interface Message<T = Json | Uint8Array> {
  topic: string;
  data: T;
  seq: number;
  publishedAt: Date | null;
}

export interface Gap { topic: string; requestedSeq: number; firstAvailableSeq: number; }

export type SubscriptionStatus =
  | { state: "connecting"; attempt: number }
  | { state: "connected"; connections: number }
  /** A retry in `delay` ms, after a close (`code`, `reason`) or a failed token request (`error`). */
  | { state: "reconnecting"; attempt: number; delay: number; code?: number; reason?: string; error?: FlowGateError }
  /** For good: `close()` (no error) or what ended it (e.g. PaymentRequired on a 4402 close). */
  | { state: "closed"; error?: FlowGateError; code?: number; reason?: string };

export interface SubscribeOptions {
  since?: number | null;
  onMessage?: (message: Message) => void;
  onGap?: (gap: Gap) => void;
  onError?: (error: FlowGateError) => void;
  onStatus?: (status: SubscriptionStatus) => void;
  reconnect?: ReconnectOptions;
}

export class Subscription implements AsyncIterable<Message> {
  /** Resolves once every filter is subscribed; rejects with what refused it (e.g. Forbidden). */
  readonly ready: Promise<Subscription>;
  readonly filters: readonly string[];
  readonly gaps: Gap[];
  readonly connections: number;
  readonly connected: boolean;
  readonly lastSeq: number | null;
  /** One more filter on the live connection, from after `since` when given (a replay, even of messages already seen); resolves on its ack, rejects if refused. */
  add(filter: string, options?: { since?: number | null }): Promise<string>;
  remove(filter: string): void;
  /** Publish on this subscription's WebSocket; resolves to the acknowledgement, rejects with the typed error or ConnectionFailed. */
  publish(topic: string, message: Json, options?: { idempotencyKey?: string }): Promise<PublishResult>;
  next(): Promise<IteratorResult<Message>>;
  [Symbol.asyncIterator](): AsyncIterator<Message>;
  close(): void;
}

export interface SentMessage { message_id: string; md5_of_body: string; seq: number; }

export class QueueMessage {
  readonly queue: Queue;
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  /** "base64" when the body is binary (then base64 text), else null. */
  readonly encoding: "base64" | null;
  readonly md5OfBody: string;
  readonly attributes: Record<string, string>;
  readonly receiveCount: number;
  readonly sentAt: string | null;
  delete(): Promise<void>;
  release(delaySeconds?: number): Promise<void>;
  changeVisibility(seconds: number): Promise<void>;
}

export interface ReceiveOptions { max?: number; wait?: number; visibilityTimeout?: number; }

export class Queue {
  readonly name: string;
  send(body: string, options?: { delaySeconds?: number; attributes?: Record<string, string> }): Promise<SentMessage>;
  sendBatch(entries: Array<string | { id?: string; body: string; delay_seconds?: number; attributes?: Record<string, string> }>): Promise<{ successful: unknown[]; failed: unknown[] }>;
  receive(options?: ReceiveOptions): Promise<QueueMessage[]>;
  messages(options?: ReceiveOptions): AsyncGenerator<QueueMessage>;
  deleteMessage(receiptHandle: string): Promise<void>;
  changeVisibility(receiptHandle: string, seconds: number): Promise<void>;
  create(attributes?: Record<string, unknown>): Promise<Record<string, unknown>>;
  attributes(): Promise<Record<string, unknown>>;
  purge(): Promise<void>;
  delete(): Promise<void>;
}

export class Client {
  constructor(baseUrl: string, options: ClientOptions);
  readonly baseUrl: string;
  info(): Promise<Record<string, unknown> & { mqtt_port?: number }>;
  /** Any API route with the token, for what has no method here. */
  call<T = unknown>(method: string, path: string, options?: { body?: unknown; params?: Record<string, string | number | null | undefined> }): Promise<T>;
  token(): Promise<TokenAnswer>;
  /** A new token now. */
  refreshToken(): Promise<TokenAnswer>;
  publish(topic: string, message: Json, options?: { idempotencyKey?: string }): Promise<number>;
  publishResult(topic: string, message: Json, options?: { idempotencyKey?: string }): Promise<PublishResult>;
  subscribe(filters: string | string[], options?: SubscribeOptions): Subscription;
  queue(name: string): Queue;
  queues(): Promise<Array<{ name: string; queue: string }>>;
  usage(): Promise<Record<string, unknown>>;
  usageHistory(): Promise<UsageHistory>;
  keys(): Promise<Array<Record<string, unknown>>>;
  createKey(name: string, rateLimit?: { rate: number; burst?: number }): Promise<Record<string, unknown> & { key: string; id: string }>;
  deleteKey(id: string): Promise<void>;
  close(): void;
}

export class AdminClient {
  constructor(baseUrl: string, adminKey: string, options?: { retry?: RetryOptions | null; fetch?: typeof fetch; timeout?: number });
  info(): Promise<Record<string, unknown> & { mqtt_port?: number }>;
  /** Any admin route: admin("GET", "/users") calls /api/v1/admin/users. */
  admin<T = unknown>(method: string, path: string, options?: { body?: unknown; params?: Record<string, string | number | null | undefined> }): Promise<T>;
  createUser(userId: string, plan?: string): Promise<Record<string, unknown>>;
  users(): Promise<Array<Record<string, unknown>>>;
  user(userId: string): Promise<Record<string, unknown>>;
  updateUser(userId: string, changes: { plan?: string; disabled?: boolean; limits?: Record<string, number | null> }): Promise<Record<string, unknown>>;
  deleteUser(userId: string): Promise<void>;
  createKey(userId: string, name?: string, rateLimit?: { rate: number; burst?: number }): Promise<Record<string, unknown> & { key: string; id: string }>;
  keys(userId: string): Promise<Array<Record<string, unknown>>>;
  deleteKey(userId: string, keyId: string): Promise<void>;
  plans(): Promise<{ plans: Array<{ name: string; quota: number; rate: number; burst: number; max_connections: number; max_message_bytes: number }>; prices: Record<string, number> }>;
  addCredits(userId: string, amount: number): Promise<Record<string, unknown>>;
  usage(userId: string): Promise<Record<string, unknown>>;
  usageHistory(userId: string): Promise<UsageHistory>;
  /** The live server view (GET /api/v1/admin/stats). */
  stats(): Promise<Record<string, unknown>>;
}

export interface UsageHistory {
  hourly: Array<{ start: string; units: number }>;
  daily: Array<{ date: string; units: number }>;
  period: Record<string, unknown> & { id: string };
}
