// Connect: ready-to-copy snippets filled in with this gateway's address, a fresh token and the topic prefix.
import { describe } from '../session.js';
import { button, copy, fill, h } from '../dom.js';

function snippets(host, httpBase, wsBase, mqttPort, token, prefix, app) {
  const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
  return [
    ['curl: publish', `curl -X POST ${httpBase}/api/v1/publish \\
  -H "Authorization: Bearer ${token}" -H "Content-Type: application/json" \\
  -d '{"topic": "sensors/room1", "message": {"temp": 21.5}}'`],
    ['Server-Sent Events (curl)', `curl -N "${httpBase}/api/v1/subscribe?topic=sensors/%23" -H "Authorization: Bearer ${token}"`],
    ['mosquitto_pub', `mosquitto_pub -h ${host} -p ${mqttPort} -u Bearer -P ${q(token)} -t sensors/room1 -m 'hello'`],
    ['mosquitto_sub', `mosquitto_sub -h ${host} -p ${mqttPort} -u Bearer -P ${q(token)} -t 'sensors/#' -v`],
    ['Browser WebSocket', `const ws = new WebSocket("${wsBase}/ws?token=" + encodeURIComponent("${token}"));
ws.onopen = () => {
  ws.send(JSON.stringify({ action: "subscribe", topic: "sensors/#" }));
  ws.send(JSON.stringify({ action: "publish", id: 1, topic: "sensors/room1", message: { temp: 21.5 } }));
};
ws.onmessage = (event) => console.log(JSON.parse(event.data));`],
    ['Browser or Node: the JavaScript client', `import { Client } from "${httpBase}/sdk/flowgate.js"; // Node 20: clients/js, with the ws package

const client = new Client("${httpBase}", { apiKey: "fgk_...", app: "${app}" }); // refreshes its token itself
const sub = client.subscribe("sensors/#", { onMessage: (m) => console.log(m.topic, m.data, m.seq) });
await sub.ready; // reconnects and resumes after the last seq it saw
console.log(await client.publish("sensors/room1", { temp: 21.5 })); // the stored seq`],
    ['Python (httpx)', `import httpx

API_KEY = "fgk_..."  # your API key: exchange it for a token
token = httpx.post("${httpBase}/token", headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"app": "${app}"}).json()["token"]
answer = httpx.post("${httpBase}/api/v1/publish", headers={"Authorization": f"Bearer {token}"},
                    json={"topic": "sensors/room1", "message": {"temp": 21.5}})
print(answer.json())  # {"topic": "${prefix}sensors/room1", "seq": ..., "duplicate": false}`],
  ];
}

export function render(ctx) {
  const { session } = ctx;
  const body = h('div', {}, h('p', {}, 'Getting a fresh token…'));
  const load = async () => {
    try {
      const [fresh, info] = await Promise.all([ctx.client.refreshToken(), ctx.client.info()]);
      const { token } = fresh;
      const st = session.state;
      const host = location.hostname;
      const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
      const list = snippets(host, location.origin, wsBase, info.mqtt_port ?? 1883, token, st.prefix, st.app);
      fill(body,
        h('dl', { class: 'facts' },
          h('dt', {}, 'HTTP, SSE, WebSocket'), h('dd', {}, h('code', {}, location.origin)),
          h('dt', {}, 'MQTT'), h('dd', {}, h('code', {}, `${host}:${info.mqtt_port ?? '—'}`), ' (user name Bearer, password the token)'),
          h('dt', {}, 'Topic prefix'), h('dd', {}, h('code', {}, st.prefix), ' (short names get it automatically)'),
          h('dt', {}, 'Token expires'), h('dd', {}, new Date(fresh.expires_at * 1000).toLocaleString())),
        list.map(([title, code]) => h('section', { class: 'snippet' },
          h('div', { class: 'title-row' }, h('h2', {}, title), button('Copy', () => copy(code, ctx.notify), { 'aria-label': `Copy ${title}` })),
          h('pre', {}, h('code', {}, code)))));
    } catch (err) {
      fill(body, h('p', {}, describe(err)));
    }
  };
  load();
  return { el: h('section', {}, h('div', { class: 'title-row' }, h('h1', {}, 'Connect'), button('New token', load)),
    h('p', {}, 'These snippets carry a token valid for a few minutes: treat them like passwords.'), body) };
}
