"""On the internet, with real clients against one real gateway: TLS on HTTPS, WSS and MQTTS (curl, httpx,
websockets, mosquitto), certificates replaced on disk, client certificates, CORS for a page on another
origin in headless Chromium, and client addresses behind trusted proxies (X-Forwarded-For, Forwarded,
PROXY protocol v1 and v2 on MQTT).

The gateway trusts 127.0.0.1 as a proxy; connections from 127.0.0.2 (also loopback on Linux) are an
untrusted client. ``/token`` allows one request per client address (``FLOWGATE_TOKEN_RATE_PER_ADDRESS``
0.1, burst 1), which is how a test sees which address the gateway took; tokens the tests need are
asked for under addresses of their own.
"""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin, Subprotocol

from protocols.mqtt.codec import encode
from protocols.mqtt.packets import Connect
from protocols.mqtt.proxy_protocol import V2_SIGNATURE
from tests.browser import browser_page
from tests.harness import ROOT, Gateway, NatsServer, free_port, temp_dir
from tests.tls_certs import CertificateAuthority, Issued

TIMEOUT = 10.0
_addresses = (f"192.0.2.{n}" for n in itertools.count(1))


@dataclass
class Certs:
    ca: CertificateAuthority
    server: Issued
    device: Issued
    stranger: Issued  # a client certificate from a CA the gateway does not know


@dataclass
class Edge:
    gateway: Gateway
    certs: Certs
    https_port: int
    mqtts_port: int
    page_port: int
    api_key: str

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def client_context(self, cert: Issued | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca.path)
        if cert is not None:
            context.load_cert_chain(cert.cert, cert.key)
        return context

    def token(self) -> str:
        """A token asked for under an address of its own (each address may ask once)."""
        response = httpx.post(
            self.gateway.base_url + "/token",
            headers={"X-API-Key": self.api_key, "X-Forwarded-For": next(_addresses)},
            json={"app": "app"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>app on another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    directory = temp_dir("fg-tls-")
    ca = CertificateAuthority(directory)
    stranger = CertificateAuthority(directory, "Some other CA").issue("stranger", server=False)
    yield Certs(ca, ca.issue("server", server=True), ca.issue("device", server=False), stranger)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def page_server() -> Iterator[int]:
    """The web app's own server: a second local origin."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def edge(nats_server: NatsServer, certs: Certs, page_server: int) -> Iterator[Edge]:
    https_port, mqtts_port = free_port(), free_port()
    data = temp_dir("fg-gw-")
    gateway = Gateway(
        nats_server.url,
        data,
        env={
            "FLOWGATE_HTTPS_PORT": str(https_port),
            "FLOWGATE_MQTTS_PORT": str(mqtts_port),
            "FLOWGATE_TLS_CERT_FILE": str(certs.server.cert),
            "FLOWGATE_TLS_KEY_FILE": str(certs.server.key),
            "FLOWGATE_TLS_CLIENT_CA_FILE": str(certs.ca.path),
            "FLOWGATE_CORS_ORIGINS": f"http://127.0.0.1:{page_server}",
            "FLOWGATE_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8",
            "FLOWGATE_TOKEN_RATE_PER_ADDRESS": "0.1",
        },
    ).start()
    _, api_key = gateway.new_user()
    yield Edge(gateway, certs, https_port, mqtts_port, page_server, api_key)
    gateway.stop()
    assert not [line for line in gateway.log if "Traceback" in line or "[error" in line], "".join(gateway.log)
    shutil.rmtree(data, ignore_errors=True)


async def run(*args: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def wait_for_log(gateway: Gateway, *needles: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(gateway.log):
            if all(n in line for n in needles):
                return line
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {needles}:\n" + "".join(gateway.log[-20:]))


# -- start-up ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "key", "ca", "variable", "why"),
    [
        ("server.crt", "missing.key", "", "FLOWGATE_TLS_KEY_FILE", "cannot read it"),
        ("server.crt", "device.key", "", "FLOWGATE_TLS_KEY_FILE", "does not match"),
        ("server.key", "server.key", "", "FLOWGATE_TLS_CERT_FILE", "not a PEM certificate"),
        ("server.crt", "server.key", "server.key", "FLOWGATE_TLS_CLIENT_CA_FILE", "not PEM CA certificates"),
        ("", "", "server.crt", "FLOWGATE_TLS_CLIENT_CA_FILE", "needs FLOWGATE_TLS_CERT_FILE"),
    ],
)
def test_unusable_tls_files_stop_start_up_naming_the_setting(
    certs: Certs, cert: str, key: str, ca: str, variable: str, why: str
) -> None:
    directory = certs.server.cert.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE_")}
    for name, file in (("CERT", cert), ("KEY", key), ("CLIENT_CA", ca)):
        if file:
            env[f"FLOWGATE_TLS_{name}_FILE"] = str(directory / file)
    done = subprocess.run(
        [sys.executable, "-m", "flowgate.cli", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert variable in done.stderr and why in done.stderr, done.stderr


# -- TLS ----------------------------------------------------------------------------------------------------


async def test_https_with_curl_and_httpx(edge: Edge) -> None:
    token = edge.token()
    body = json.dumps({"topic": "tls/curl", "message": "over https"})
    code, out = await run(
        "curl", "-sS", "--fail-with-body", "--cacert", str(edge.certs.ca.path), "-X", "POST",
        f"{edge.https_url}/api/v1/publish", "-H", f"Authorization: Bearer {token}",
        "-H", "Content-Type: application/json", "-d", body,
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["seq"] > 0
    code, out = await run("curl", "-sS", f"https://localhost:{edge.https_port}/healthz")  # no CA: not trusted
    assert code == 60, out
    async with httpx.AsyncClient(verify=edge.client_context(), timeout=TIMEOUT) as http:
        answer = await http.post(
            f"{edge.https_url}/api/v1/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": "tls/httpx", "message": {"n": 1}},
        )
        assert answer.status_code == 200, answer.text
        assert (await http.get(f"https://localhost:{edge.https_port}/readyz")).status_code == 200
    # TLS 1.2 still serves (with a forward-secret AEAD suite); nothing older is offered
    context = edge.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", edge.https_port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
            cipher = tls.cipher()
            assert (
                cipher is not None and cipher[0].startswith("ECDHE-") and ("GCM" in cipher[0] or "CHACHA" in cipher[0])
            )


async def test_websocket_over_wss(edge: Edge) -> None:
    token = edge.token()
    url = f"wss://127.0.0.1:{edge.https_port}/ws?token={token}"
    async with websockets.connect(url, ssl=edge.client_context()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "topic": "tls/ws"}))
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["action"] == "pong"
        await ws.send(json.dumps({"action": "publish", "topic": "tls/ws", "message": "secure", "id": 1}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(2)]
    assert {f["action"] for f in frames} == {"ack", "message"}
    assert next(f for f in frames if f["action"] == "message")["data"] == "secure"


async def test_mqtt_over_tls_with_mosquitto_and_client_certificates(edge: Edge) -> None:
    token = edge.token()
    tls = ["-h", "127.0.0.1", "-p", str(edge.mqtts_port), "--cafile", str(edge.certs.ca.path)]
    device = ["--cert", str(edge.certs.device.cert), "--key", str(edge.certs.device.key)]
    login = ["-u", "Bearer", "-P", token]
    subscriber = await asyncio.create_subprocess_exec(
        "stdbuf", "-oL", "mosquitto_sub", *tls, *device, *login, "-t", "tls/mqtt", "-q", "1", "-C", "1", "-W", "10", "-d",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert subscriber.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        while b"SUBACK" not in (line := await subscriber.stdout.readline()):
            assert line, "mosquitto_sub ended before subscribing"
    code, out = await run("mosquitto_pub", *tls, *device, *login, "-t", "tls/mqtt", "-q", "1", "-m", "from a device")
    assert code == 0, out
    rest, _ = await asyncio.wait_for(subscriber.communicate(), TIMEOUT)
    assert subscriber.returncode == 0 and b"from a device" in rest
    # no client certificate, or one from a CA the gateway does not trust: the handshake fails, nothing is sent
    stranger = ["--cert", str(edge.certs.stranger.cert), "--key", str(edge.certs.stranger.key)]
    for certificate in ([], stranger):
        code, out = await run("mosquitto_pub", *tls, *certificate, *login, "-t", "tls/mqtt", "-m", "refused")
        assert code != 0, out
    # HTTPS asks for no client certificate (browsers and HTTP clients authenticate with tokens)
    async with httpx.AsyncClient(verify=edge.client_context(), timeout=TIMEOUT) as http:
        assert (await http.get(f"{edge.https_url}/healthz")).status_code == 200


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_certificate_replaced_on_disk_is_served_to_the_next_connection(edge: Edge) -> None:
    device = edge.client_context(edge.certs.device)
    old = edge.certs.server.serial
    assert served_serial(edge.https_port, edge.client_context()) == old
    assert served_serial(edge.mqtts_port, device) == old
    async with websockets.connect(
        f"wss://127.0.0.1:{edge.https_port}/ws?token={edge.token()}", ssl=edge.client_context()
    ) as ws:  # open across the renewal
        renewed = edge.certs.ca.issue("server", server=True)  # same paths, as certbot renews
        assert renewed.serial != old
        assert served_serial(edge.https_port, edge.client_context()) == renewed.serial
        assert served_serial(edge.mqtts_port, device) == renewed.serial
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["action"] == "pong"
    edge.certs.server = renewed
    await wait_for_log(edge.gateway, "TLS certificate reloaded")


async def test_a_half_written_renewal_keeps_the_previous_certificate(edge: Edge) -> None:
    current, pending = edge.certs.server, edge.certs.ca.issue("next", server=True)
    shutil.copyfile(pending.cert, current.cert)  # the new certificate, the old key: they do not match
    assert served_serial(edge.https_port, edge.client_context()) == current.serial
    await wait_for_log(edge.gateway, "TLS certificate not reloaded", "FLOWGATE_TLS_KEY_FILE", "does not match")
    shutil.copyfile(pending.key, current.key)  # the renewal completes
    assert served_serial(edge.https_port, edge.client_context()) == pending.serial
    assert served_serial(edge.mqtts_port, edge.client_context(edge.certs.device)) == pending.serial
    edge.certs.server = Issued(current.cert, current.key, pending.serial)


# -- CORS ---------------------------------------------------------------------------------------------------

BROWSER_SCRIPT = """
async ({gateway, token, apiKey}) => {
  const out = {};
  const source = new EventSource(`${gateway}/api/v1/subscribe?topic=cors/news&token=${token}`);
  const received = new Promise((resolve, reject) => {
    source.addEventListener("message", (event) => { source.close(); resolve(JSON.parse(event.data)); });
    source.onerror = () => reject(new Error("EventSource failed"));
  });
  await new Promise((resolve) => { source.onopen = resolve; });
  const published = await fetch(`${gateway}/api/v1/publish`, {
    method: "POST",
    headers: {"Authorization": `Bearer ${token}`, "Content-Type": "application/json", "Idempotency-Key": "k-1"},
    body: JSON.stringify({topic: "cors/news", message: "from another origin"}),
  });
  out.published = {status: published.status, body: await published.json()};
  out.event = await received;
  const refused = await fetch(`${gateway}/api/v1/publish`, {
    method: "POST", headers: {"Authorization": "Bearer forged", "Content-Type": "application/json"},
    body: "{}",
  });
  out.refused = {status: refused.status, body: await refused.json()};
  const queue = await fetch(`${gateway}/api/v1/queues/cors-jobs/messages`, {
    method: "POST", headers: {"Authorization": `Bearer ${token}`, "Content-Type": "application/json"},
    body: JSON.stringify({body: "job"}),
  });
  out.queue = queue.status;
  out.tokens = [];
  for (let i = 0; i < 2; i++) {
    const answer = await fetch(`${gateway}/token`, {
      method: "POST", headers: {"X-API-Key": apiKey, "Content-Type": "application/json"}, body: "{}",
    });
    out.tokens.push({status: answer.status, retryAfter: answer.headers.get("Retry-After"),
                     limit: answer.headers.get("RateLimit-Limit")});
  }
  return out;
}
"""

BLOCKED_SCRIPT = """
async ({gateway, token}) => {
  try {
    await fetch(`${gateway}/api/v1/publish`, {method: "POST", headers: {"Authorization": `Bearer ${token}`,
      "Content-Type": "application/json"}, body: JSON.stringify({topic: "cors/blocked", message: "x"})});
    return "sent";
  } catch (error) { return "blocked"; }
}
"""


async def test_browser_page_on_another_origin_publishes_and_streams(edge: Edge) -> None:
    token = edge.token()
    args = {"gateway": edge.gateway.base_url, "token": token, "apiKey": edge.api_key}
    async with browser_page(f"http://127.0.0.1:{edge.page_port}/") as page:
        out = await asyncio.wait_for(page.evaluate(BROWSER_SCRIPT, args), 20)
        assert out["published"]["status"] == 200 and out["published"]["body"]["seq"] > 0
        assert out["event"]["data"] == "from another origin"
        assert out["refused"]["status"] == 401 and out["refused"]["body"]["error"]["code"] == "unauthorized"
        assert out["queue"] in (200, 201)  # a raw fast-path route: preflight answered before any routing
        # 127.0.0.1 asks at most once (trusted proxy, no forwarding header: the address is its own)
        last = out["tokens"][-1]
        assert last["status"] == 429 and int(last["retryAfter"]) >= 1 and last["limit"] == "1"
        await page.goto(f"http://localhost:{edge.page_port}/")  # another origin, not in the list
        assert await page.evaluate(BLOCKED_SCRIPT, args) == "blocked"


async def test_preflight_on_every_route_and_websocket_origin_check(edge: Edge) -> None:
    origin = f"http://127.0.0.1:{edge.page_port}"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(base_url=edge.gateway.base_url, timeout=TIMEOUT) as http:
        for path in ("/api/v1/publish", "/token", "/api/v1/queues/a/b/messages/batch", "/api/v1/subscribe"):
            answer = await http.options(
                path, headers={**preflight, "Access-Control-Request-Headers": "authorization,idempotency-key"}
            )
            assert answer.status_code == 200, (path, answer.text)
            assert answer.headers["access-control-allow-origin"] == origin
            assert "Last-Event-ID" in answer.headers["access-control-allow-headers"]
        refused = await http.options("/api/v1/publish", headers={**preflight, "Origin": "https://evil.example"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        async with http.stream("GET", "/api/v1/subscribe?topic=x&token=forged", headers={"Origin": origin}) as sse:
            assert sse.status_code == 401 and sse.headers["access-control-allow-origin"] == origin
    token = edge.token()
    for path, subprotocols in (("/ws", None), ("/mqtt", [Subprotocol("mqtt")])):
        with pytest.raises(websockets.InvalidStatus) as refused_ws:
            await websockets.connect(
                f"{edge.gateway.ws_url}{path}?token={token}",
                origin=Origin("https://evil.example"),
                subprotocols=subprotocols,
            )
        assert refused_ws.value.response.status_code == 403
    own = f"http://127.0.0.1:{edge.gateway.http_port}"  # a page the gateway serves itself (same origin)
    for allowed in (origin, own):
        async with websockets.connect(f"{edge.gateway.ws_url}/ws?token={token}", origin=Origin(allowed)) as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["action"] == "pong"


# -- the client's real address --------------------------------------------------------------------------


async def test_token_limit_counts_the_client_behind_a_trusted_proxy_only(edge: Edge) -> None:
    untrusted = httpx.AsyncHTTPTransport(local_address="127.0.0.2")

    async def ask(headers: dict[str, str], transport: httpx.AsyncHTTPTransport | None = None) -> int:
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as http:
            answer = await http.post(
                edge.gateway.base_url + "/token", headers={"X-API-Key": edge.api_key, **headers}, json={}
            )
        return answer.status_code

    # through the trusted proxy: each client has its own allowance
    assert await ask({"X-Forwarded-For": "203.0.113.10"}) == 200
    assert await ask({"X-Forwarded-For": "203.0.113.10"}) == 429
    assert await ask({"X-Forwarded-For": "203.0.113.11"}) == 200
    # what a client writes in front of the proxy's entry is not its address
    assert await ask({"X-Forwarded-For": "198.51.100.99, 203.0.113.11"}) == 429
    assert await ask({"X-Forwarded-For": "203.0.113.12, 10.1.1.1"}) == 200  # two trusted proxies
    assert await ask({"X-Forwarded-For": "203.0.113.12"}) == 429
    assert await ask({"Forwarded": 'for="[2001:db8::12]:4711";proto=https'}) == 200
    assert await ask({"Forwarded": "for=2001:db8::12"}) == 429
    # an untrusted client claiming addresses is counted as itself
    assert await ask({"X-Forwarded-For": "203.0.113.20"}, untrusted) == 200
    assert await ask({"X-Forwarded-For": "203.0.113.21"}, untrusted) == 429
    assert await ask({"Forwarded": "for=203.0.113.22"}, untrusted) == 429


async def test_websocket_logs_name_the_client_behind_a_trusted_proxy(edge: Edge) -> None:
    url = f"{edge.gateway.ws_url}/ws?token={edge.token()}"
    async with websockets.connect(url, additional_headers={"X-Forwarded-For": "203.0.113.50"}) as ws:
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["action"] == "pong"
    await wait_for_log(edge.gateway, '203.0.113.50:0 - "WebSocket /ws', "accepted")
    claim = {"X-Forwarded-For": "203.0.113.51"}
    async with websockets.connect(url, additional_headers=claim, local_addr=("127.0.0.2", 0)):  # untrusted
        pass
    await wait_for_log(edge.gateway, "127.0.0.2:", '- "WebSocket /ws', "accepted")
    assert not any("203.0.113.51" in line for line in edge.gateway.log)


def connect_packet(token: str, client_id: str) -> bytes:
    return encode(
        Connect(client_id=client_id, clean_session=True, keepalive=30, username="Bearer", password=token.encode())
    )


def proxy_v2(source: str, port: int) -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 1883)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


@pytest.fixture
async def mqtt_from() -> AsyncIterator[Any]:
    writers: list[asyncio.StreamWriter] = []

    async def open_from(edge: Edge, local: str, data: bytes) -> bytes:
        """Send ``data`` from ``local`` to the plain MQTT port; what comes back before the server closes or 4 bytes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.gateway.mqtt_port, local_addr=(local, 0))
        writers.append(writer)
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
        except asyncio.IncompleteReadError as closed:
            return closed.partial

    yield open_from
    for writer in writers:
        writer.close()


CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


async def test_proxy_protocol_on_mqtt_from_trusted_and_untrusted_peers(edge: Edge, mqtt_from: Any) -> None:
    token = edge.token()
    v1 = b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 1883\r\n"
    assert await mqtt_from(edge, "127.0.0.1", v1 + connect_packet(token, "via-v1")) == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "mqtt", "connected", "client_id='via-v1'", "peer=198.51.100.7:5555")
    assert await mqtt_from(edge, "127.0.0.1", proxy_v2("198.51.100.8", 6666) + connect_packet(token, "via-v2")) == (
        CONNACK_ACCEPTED
    )
    await wait_for_log(edge.gateway, "mqtt", "connected", "client_id='via-v2'", "peer=198.51.100.8:6666")
    # the balancer's own health check (LOCAL) and a trusted peer without a header keep the peer's address
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert await mqtt_from(edge, "127.0.0.1", local + connect_packet(token, "local")) == CONNACK_ACCEPTED
    assert await mqtt_from(edge, "127.0.0.1", connect_packet(token, "direct")) == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='direct'", "peer=127.0.0.1:")
    # a malformed header from the proxy, and any header from an untrusted peer: closed, no CONNACK
    assert await mqtt_from(edge, "127.0.0.1", b"PROXY TCP4 nonsense\r\n" + connect_packet(token, "bad")) == b""
    await wait_for_log(edge.gateway, "closed: malformed PROXY v1 line")
    for header in (v1, proxy_v2("198.51.100.9", 7777)):
        assert await mqtt_from(edge, "127.0.0.2", header + connect_packet(token, "spoofer")) == b""
    await wait_for_log(edge.gateway, "peer=127.0.0.2:", "closed before CONNECT completed")
    # the untrusted peer is still served as itself
    assert await mqtt_from(edge, "127.0.0.2", connect_packet(token, "honest")) == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='honest'", "peer=127.0.0.2:")


def test_tls_only_with_the_plain_ports_off(nats_server: NatsServer, certs: Certs) -> None:
    https_port, mqtts_port = free_port(), free_port()
    gateway = Gateway(
        nats_server.url,
        temp_dir("fg-gw-"),
        env={
            "FLOWGATE_HTTP_PORT": "-1",
            "FLOWGATE_MQTT_PORT": "-1",
            "FLOWGATE_HTTPS_PORT": str(https_port),
            "FLOWGATE_MQTTS_PORT": str(mqtts_port),
            "FLOWGATE_TLS_CERT_FILE": str(certs.server.cert),
            "FLOWGATE_TLS_KEY_FILE": str(certs.server.key),
        },
    )
    gateway.data_dir.mkdir(parents=True, exist_ok=True)
    gateway.process = subprocess.Popen(
        [sys.executable, "-m", "flowgate.cli", "serve"],
        cwd=ROOT,
        env=gateway.environment(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    gateway._pump()
    context = ssl.create_default_context(cafile=certs.ca.path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert gateway.process.poll() is None, "".join(gateway.log)
            try:
                if httpx.get(f"https://127.0.0.1:{https_port}/readyz", verify=context, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "".join(gateway.log)
            time.sleep(0.05)
        assert served_serial(mqtts_port, context) == certs.server.serial  # no client CA here: no certificate asked
        for port in (gateway.http_port, gateway.mqtt_port):  # the ports the plain listeners would have had
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        assert not any("MQTT listening" in line or "Uvicorn running" in line for line in gateway.log)
    finally:
        gateway.stop()
        shutil.rmtree(gateway.data_dir, ignore_errors=True)


async def mqtts_from(edge: Edge, local: str, header: bytes, token: str, client_id: str) -> bytes:
    """``header`` in clear, then TLS with the device certificate and CONNECT; the CONNACK (or b"" if refused)."""
    raw = socket.create_connection(("127.0.0.1", edge.mqtts_port), timeout=TIMEOUT, source_address=(local, 0))
    raw.sendall(header)
    raw.setblocking(False)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=raw, ssl=edge.client_context(edge.certs.device), server_hostname="localhost"),
            TIMEOUT,
        )
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(connect_packet(token, client_id))
        return await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
    finally:
        writer.close()


async def test_proxy_protocol_in_front_of_mqtt_over_tls(edge: Edge) -> None:
    token = edge.token()
    v1 = b"PROXY TCP4 198.51.100.10 127.0.0.1 4444 8883\r\n"
    assert await mqtts_from(edge, "127.0.0.1", v1, token, "tls-v1") == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='tls-v1'", "peer=198.51.100.10:4444")
    assert await mqtts_from(edge, "127.0.0.1", proxy_v2("198.51.100.11", 5555), token, "tls-v2") == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='tls-v2'", "peer=198.51.100.11:5555")
    assert await mqtts_from(edge, "127.0.0.1", b"", token, "tls-direct") == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='tls-direct'", "peer=127.0.0.1:")
    # from an untrusted peer the header is not TLS: the handshake fails
    assert await mqtts_from(edge, "127.0.0.2", v1, token, "tls-spoofer") == b""
    await wait_for_log(edge.gateway, "mqtts connection from 127.0.0.2:", "failed before MQTT")
    assert await mqtts_from(edge, "127.0.0.2", b"", token, "tls-honest") == CONNACK_ACCEPTED
    await wait_for_log(edge.gateway, "connected", "client_id='tls-honest'", "peer=127.0.0.2:")
