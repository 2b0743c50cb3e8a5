// node --test: the JS client against a real gateway (started by tests/test_client_js.py).
// FLOWGATE_TEST_URL and FLOWGATE_TEST_ADMIN_KEY name it; the ws package stands in for Node 20's missing WebSocket.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { WebSocket } from "ws";
import {
  AdminClient, BadRequest, Client, Forbidden, NotFound, PaymentRequired, RateLimited, Unauthorized, topicMatches,
} from "../flowgate.js";

const URL = process.env.FLOWGATE_TEST_URL;
const ADMIN_KEY = process.env.FLOWGATE_TEST_ADMIN_KEY;
const admin = new AdminClient(URL, ADMIN_KEY);
let users = 0;

async function newUser(rateLimit) {
  const userId = `js${process.pid}-${++users}`;
  await admin.createUser(userId);
  return { userId, apiKey: (await admin.createKey(userId, "test", rateLimit)).key };
}

async function take(sub, count, timeoutMs = 10000) {
  const out = [];
  const timer = setTimeout(() => sub.close(), timeoutMs);
  for (let i = 0; i < count; i++) {
    const { value, done } = await sub.next();
    if (done) break;
    out.push(value);
  }
  clearTimeout(timer);
  assert.equal(out.length, count, `got ${out.length} of ${count} messages in time`);
  return out;
}

const until = async (check, timeoutMs = 15000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe("flowgate.js against a real gateway", { concurrency: true }, () => {
  test("publish and subscribe keep types; overlapping filters deliver once; since replays", async () => {
    const { apiKey } = await newUser();
    const client = new Client(URL, { apiKey, app: "app", WebSocket });
    const token = await client.token();
    const sub = client.subscribe(["s/+", "s/#", token.topic_prefix + "other"]);
    await sub.ready;
    const a = await client.publish("s/a", "hello");
    const b = await client.publish("s/b", { t: 21.5 });
    const c = await client.publish("other", [1, 2]);
    const got = await take(sub, 3);
    sub.close();
    assert.deepEqual(got.map((m) => [m.topic, m.data, m.seq]), [["s/a", "hello", a], ["s/b", { t: 21.5 }, b], ["other", [1, 2], c]]);
    assert.ok(got[0].publishedAt instanceof Date);
    const again = await client.publishResult("s/a", "x", { idempotencyKey: "k" });
    assert.deepEqual(await client.publishResult("s/a", "x", { idempotencyKey: "k" }), { ...again, duplicate: true });
    const replay = client.subscribe("s/#", { since: a });
    assert.deepEqual((await take(replay, 2)).map((m) => m.seq), [b, again.seq]);
    replay.close();
  });

  test("a dropped connection reconnects and resumes: nothing missed or repeated", async () => {
    const { apiKey } = await newUser();
    const client = new Client(URL, { apiKey, app: "app", WebSocket, reconnect: { delay: 400, maxDelay: 800 } });
    const sub = client.subscribe(["r/+", "r/#"]);
    await sub.ready;
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await client.publish(`r/${i}`, i));
    const first = await take(sub, 5);
    sub.ws.close(4000, "test drops the connection");
    for (let i = 5; i < 10; i++) sent.push(await client.publish(`r/${i}`, i));
    const rest = await take(sub, 5);
    sub.close();
    assert.deepEqual([...first, ...rest].map((m) => m.data), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual([...first, ...rest].map((m) => m.seq), sent);
    assert.equal(sub.connections, 2);
  });

  test("a short token is refreshed on the live socket with auth", async () => {
    const { apiKey } = await newUser();
    const issued = [];
    const getToken = async () => {
      const answer = await fetch(`${URL}/token`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ app: "app", ttl: 4, api_key: apiKey }),
      });
      issued.push(await answer.json());
      return issued.at(-1);
    };
    const client = new Client(URL, { getToken, WebSocket });
    const sub = client.subscribe("live");
    await sub.ready;
    await until(() => issued.length >= 2 && Date.now() / 1000 > issued[0].expires_at + 0.5);
    const seq = await client.publish("live", "after expiry");
    assert.deepEqual((await take(sub, 1)).map((m) => m.seq), [seq]);
    assert.equal(sub.connections, 1);
    sub.close();
  });

  test("typed errors: 401, 403, 402 with the limit, 429 with retryAfter; retries wait for Retry-After", async () => {
    await assert.rejects(new Client(URL, { apiKey: "fgk_no_no", app: "app" }).publish("t", 1), Unauthorized);
    const forged = new Client(URL, { getToken: async () => "not.a.jwt", WebSocket, reconnect: { delay: 20 } });
    await assert.rejects(forged.subscribe("t").ready, Unauthorized);  // 4401, and again with a new token
    const { userId, apiKey } = await newUser();
    const narrow = new Client(URL, { apiKey, app: "app", WebSocket, permissions: { publish: { allow: ["ok/#"] }, subscribe: { allow: ["ok/#"] } } });
    await assert.rejects(narrow.publish("no", 1), Forbidden);
    await assert.rejects(narrow.subscribe("no/#").ready, Forbidden);
    await admin.updateUser(userId, { limits: { quota: 2 } });
    const quota = new Client(URL, { apiKey, app: "quota" });
    const error = await (async () => {
      for (let i = 0; i < 10; i++) {
        try { await quota.publish("q", i); } catch (e) { return e; }
      }
    })();
    assert.ok(error instanceof PaymentRequired, String(error));
    assert.equal(error.limit, "monthly_quota");
    assert.ok(error.resetsAt);

    const slow = await newUser({ rate: 1 });
    const impatient = new Client(URL, { apiKey: slow.apiKey, app: "app", retry: null });
    await impatient.publish("r", 1);
    const limited = await impatient.publish("r", 2).catch((e) => e);
    assert.ok(limited instanceof RateLimited && limited.retryAfter > 0, String(limited));
    const patient = new Client(URL, { apiKey: slow.apiKey, app: "app", retry: { maxRetries: 3, delay: 10 } });
    await patient.publish("r", 3).catch(() => patient.publish("r", 3));
    const started = Date.now();
    await patient.publish("r", 4);
    assert.ok(Date.now() - started >= 500, `retried after ${Date.now() - started} ms, before Retry-After`);
  });

  test("queues end to end", async () => {
    const { apiKey } = await newUser();
    const client = new Client(URL, { apiKey, app: "app" });
    const q = client.queue("orders");
    assert.equal((await q.create({ visibility_timeout: 30 })).attributes.visibility_timeout, 30);
    await q.send("one", { attributes: { kind: "a" } });
    const batch = await q.sendBatch(["two", { id: "x", body: "three" }]);
    assert.equal(batch.successful.length, 2);
    const counts = {};
    let released = false;
    for await (const m of q.messages({ wait: 2 })) {
      if (m.body === "one") assert.deepEqual(m.attributes, { kind: "a" });
      if (m.body === "two" && !released) { released = true; await m.release(); continue; }
      counts[m.body] = m.receiveCount;
      await m.delete();
      if (Object.keys(counts).length === 3) break;
    }
    assert.deepEqual(counts, { one: 1, two: 2, three: 1 });
    assert.ok((await client.queues()).some((x) => x.name === "orders"));
    await q.send("four");
    await q.purge();
    assert.equal((await q.attributes()).approximate_visible, 0);
    await q.delete();
    await assert.rejects(q.attributes(), NotFound);
  });

  test("what a page needs: filters added and removed live, replays, status, token hooks, history and stats", async () => {
    const { userId, apiKey } = await newUser();
    const seen = [];
    const client = new Client(URL, { apiKey, app: "app", WebSocket, onToken: (t) => seen.push(t.token), reconnect: { delay: 200, maxDelay: 400 } });
    const statuses = [];
    const sub = client.subscribe([], { onStatus: (s) => statuses.push(s) });
    await sub.ready;  // no filter yet: connected and waiting
    assert.ok(sub.connected && statuses.some((s) => s.state === "connected"));
    assert.equal(await sub.add("c/#"), "c/#");
    const first = await client.publish("c/one", 1);
    await client.publish("c/two", 2);
    assert.deepEqual((await take(sub, 2)).map((m) => m.data), [1, 2]);
    await sub.add("c/one", { since: first - 1 });  // a replay repeats what was already seen, once
    assert.deepEqual((await take(sub, 1)).map((m) => [m.topic, m.seq]), [["c/one", first]]);
    await assert.rejects(sub.add("bad/#/x"), (e) => e.status >= 400);  // refused: that add() rejects, the rest goes on
    const acked = await sub.publish("c/ws", { over: "ws" }, { idempotencyKey: "w1" });  // on the socket, with its ack
    assert.deepEqual(await sub.publish("c/ws", { over: "ws" }, { idempotencyKey: "w1" }), { ...acked, duplicate: true });
    assert.deepEqual((await take(sub, 1)).map((m) => [m.data, m.seq]), [[{ over: "ws" }, acked.seq]]);
    await assert.rejects(sub.publish("c/#", 1), BadRequest);
    sub.remove("c/one");
    sub.ws.close(4000, "test drops the connection");
    await until(() => statuses.some((s) => s.state === "reconnecting" && s.code === 4000) && sub.connections === 2 && sub.connected);
    const third = await client.publish("c/three", 3);
    assert.deepEqual((await take(sub, 1)).map((m) => m.seq), [third]);  // c/# only, not twice
    assert.deepEqual(sub.filters, ["c/#"]);
    sub.close();
    assert.equal(statuses.at(-1).state, "closed");

    assert.equal(seen.length, 1);
    const fresh = await client.refreshToken();
    assert.deepEqual(seen, [seen[0], fresh.token]);
    const again = new Client(URL, { apiKey, app: "app", token: fresh, onToken: () => assert.fail("no new exchange") });
    assert.ok((await again.usage()).used >= 3);  // the token it was given
    const history = await again.usageHistory();
    assert.ok(Array.isArray(history.hourly) && Array.isArray(history.daily));
    assert.ok(Array.isArray((await again.call("GET", "/api/v1/keys")).keys));
    const key = await again.createKey("limited", { rate: 2, burst: 3 });
    assert.deepEqual((await again.keys()).find((k) => k.id === key.id).rate_limit, { rate: 2, burst: 3 });
    assert.equal(typeof (await again.info()).mqtt_port, "number");
    assert.ok(Array.isArray((await admin.usageHistory(userId)).hourly));
    assert.equal((await admin.stats()).nats, true);
  });

  test("topic matching follows MQTT", () => {
    assert.ok(topicMatches("a/#", "a"));
    assert.ok(topicMatches("a/+/c", "a/b/c"));
    assert.ok(!topicMatches("+/x", "$sys/x"));
    assert.ok(!topicMatches("a/+", "a/b/c"));
  });
});
