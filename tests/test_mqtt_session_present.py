"""Session Present right after a CONNACK: a persistent session exists from the moment its CONNACK is sent.

A second connection with the same client id that resumes the session (Clean Session / Clean Start 0) the
moment the first one's CONNACK arrives gets Session Present 1 [MQTT-3.2.2-2] (MQTT 5: 3.2.2.1.1) and the
session's state. The gateway creates the session's durable consumer before CONNACK and starts pulling from it
after (``MqttConnection._on_connect``, ``SessionConsumer.create`` and ``start``); the second connection runs
on another replica, where nothing waits for the first one to close before looking the session up. Two
replicas on a nats-server of their own; the raw 3.1.1 and 5 clients (tests/mqtt_client.py, mqtt5_client.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from protocols.mqtt.packets import ConnAck, Connect, Publish
from protocols.mqtt.properties import NO_PROPERTIES, Properties
from tests.harness import Gateway, replicas_on_own_nats
from tests.mqtt5_client import Raw5
from tests.mqtt_client import RawClient

pytestmark = pytest.mark.timeout(120)
PAIRS = 40  # the race is a few milliseconds wide: before the fix a few of these pairs lost it on almost every run
VERSIONS = [pytest.param(4, id="3.1.1"), pytest.param(5, id="5")]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Gateway]]:
    with replicas_on_own_nats("fg-present-", {}) as gateways:
        yield gateways


async def opened(gw: Gateway, version: int) -> RawClient:
    """A TCP connection to ``gw``'s MQTT port, nothing sent yet."""
    return await (Raw5 if version == 5 else RawClient).open(gw.mqtt_port)


async def resume(client: RawClient, version: int, token: str, client_id: str) -> ConnAck:
    """CONNECT with Clean Session / Clean Start 0 (MQTT 5: a Session Expiry Interval, so the session persists)."""
    props = Properties(session_expiry_interval=300) if version == 5 else NO_PROPERTIES
    await client.send(Connect(client_id, False, 60, "Bearer", token.encode(), None, "MQTT", version, props))
    connack = await client.expect(ConnAck)
    assert connack.return_code == 0, connack
    return connack


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_session_resumed_the_moment_its_connack_arrived_is_present(
    replicas: list[Gateway], version: int
) -> None:
    home, there = replicas
    _, token = home.user_token()
    absent: list[str] = []
    for n in range(PAIRS):
        client_id = f"present-{n}-{secrets.token_hex(4)}"
        second = await opened(there, version)  # connected beforehand: its CONNECT goes out at once
        first = await opened(home, version)
        assert (await resume(first, version, token, client_id)).session_present is False  # a new session
        if not (await resume(second, version, token, client_id)).session_present:
            absent.append(client_id)
        await first.close()
        await second.close()
    assert not absent, f"Session Present 0 for {len(absent)} of {PAIRS} sessions resumed right after CONNACK"


@pytest.mark.parametrize("where", ["same", "other"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_a_takeover_right_after_suback_has_the_subscription(
    replicas: list[Gateway], version: int, where: str
) -> None:
    home = replicas[0]
    there = replicas[1] if where == "other" else home
    _, token = home.user_token()
    client_id = f"subscribed-{secrets.token_hex(4)}"
    first = await opened(home, version)
    assert (await resume(first, version, token, client_id)).session_present is False
    granted = (await first.subscribe(("jobs/#", 1))).return_codes
    assert granted == (1,)
    second = await opened(there, version)
    assert (await resume(second, version, token, client_id)).session_present is True  # [MQTT-3.2.2-2]
    assert await first.closed_by_server()  # taken over [MQTT-3.1.4-2]
    publisher = await opened(home, version)
    await publisher.send(Connect("", True, 60, "Bearer", token.encode(), None, "MQTT", version))
    await publisher.expect(ConnAck)
    await publisher.publish("jobs/1", b"after the takeover", qos=1)
    got = await second.expect(Publish)
    assert (got.topic, got.payload, got.qos) == ("jobs/1", b"after the takeover", 1)
    for client in (first, second, publisher):
        await client.close()
