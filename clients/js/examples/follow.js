#!/usr/bin/env node
// Follow topics from Node: one JSON line per message ({"topic", "data", "seq"}), reconnecting and resuming.
//
//   FLOWGATE_API_KEY=fgk_... node examples/follow.js http://localhost:8080 myapp 'sensors/+' --count 10
//
// Prints {"ready": true} once subscribed and {"connections": N} before it exits after --count messages.
import { WebSocket } from "ws";
import { Client } from "../flowgate.js";

const args = process.argv.slice(2);
const option = (name) => {
  const at = args.indexOf(name);
  return at < 0 ? null : Number(args.splice(at, 2)[1]);
};
const count = option("--count");
const since = option("--since");
const [url, app, ...filters] = args;
const client = new Client(url, {
  apiKey: process.env.FLOWGATE_API_KEY, app, WebSocket, reconnect: { delay: 50, maxDelay: 500 },
});
const sub = client.subscribe(filters, { since, onGap: (gap) => console.log(JSON.stringify({ gap })) });
await sub.ready;
console.log(JSON.stringify({ ready: true }));
let received = 0;
for await (const { topic, data, seq } of sub) {
  console.log(JSON.stringify({ topic, data, seq }));
  if (count != null && ++received >= count) break;
}
console.log(JSON.stringify({ connections: sub.connections }));
