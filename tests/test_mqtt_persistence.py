"""MQTT persistent sessions (clean session 0) in JetStream: disconnects, restarts, replicas.

[MQTT-3.1.2-4]: with CleanSession 0 the server resumes the session from its
state; the session holds the subscriptions and the QoS 1/2 messages not yet
completed [MQTT-3.1.2-5]; unacknowledged PUBLISH packets are re-sent on
reconnect [MQTT-4.4.0-1] with DUP set [MQTT-3.3.1-1].
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from protocols.mqtt.packets import Disconnect, PingReq, PingResp, PubAck, PubComp, Publish, PubRec, PubRel
from tests.harness import Gateway, NatsServer
from tests.mqtt_client import RawClient, quiet

pytestmark = pytest.mark.timeout(180)


async def http_publish(gateway: Gateway, token: str, topic: str, message: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            gateway.base_url + "/api/v1/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": topic, "message": message},
        )
    assert answer.status_code == 200, answer.text


async def receive(client: RawClient, count: int, *, ack: bool = True, timeout: float = 10) -> list[Publish]:
    got: list[Publish] = []
    while len(got) < count:
        packet = await client.recv(timeout)
        if isinstance(packet, Publish):
            got.append(packet)
            if ack and packet.qos == 1:
                assert packet.packet_id is not None
                await client.send(PubAck(packet.packet_id))
            elif ack and packet.qos == 2:
                assert packet.packet_id is not None
                await client.send(PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            await client.send(PubComp(packet.packet_id))
    return got


async def goodbye(client: RawClient) -> None:
    await client.send(Disconnect())
    await client.close()


async def test_offline_messages_and_session_present(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="meter-1", clean=False)
    assert connack.session_present is False  # a new session [MQTT-3.2.2-3]
    assert (await client.subscribe(("jobs/#", 1), ("alerts", 2))).return_codes == (1, 2)
    await goodbye(client)
    for n in range(3):
        await http_publish(gateway, token, f"jobs/{n}", f"job {n}")
    await http_publish(gateway, token, "other", "not subscribed")
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="meter-1", clean=False)
    assert connack.session_present is True  # [MQTT-3.2.2-2]
    got = await receive(client, 3)
    assert [(m.topic, m.payload, m.qos) for m in got] == [(f"jobs/{n}", f"job {n}".encode(), 1) for n in range(3)]
    await client.send(PingReq())
    await client.expect(PingResp)  # nothing else was queued
    await goodbye(client)


async def test_unacknowledged_messages_are_redelivered_with_dup(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="slow-1", clean=False)
    await client.subscribe(("t/#", 2))
    publisher, _ = await RawClient.connect(gateway.mqtt_port, token)
    await publisher.publish("t/one", b"one", 1)
    await publisher.publish("t/two", b"two", 2)
    first = await receive(client, 2, ack=False)  # received, never acknowledged
    assert [m.dup for m in first] == [False, False]
    await client.close()  # the network drops
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="slow-1", clean=False)
    assert connack.session_present
    again = await receive(client, 2)
    assert [(m.payload, m.qos, m.dup) for m in again] == [(b"one", 1, True), (b"two", 2, True)]
    # The same identifiers: a client still holding a QoS 2 id answers PUBREC without delivering twice.
    assert [m.packet_id for m in again] == [m.packet_id for m in first]
    await goodbye(client)  # 'two' got PUBREC, its PUBREL is not answered yet
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="slow-1", clean=False)
    rel = await client.expect(PubRel)  # re-sent with its original id [MQTT-4.4.0-1]
    assert rel.packet_id == again[1].packet_id
    await client.send(PubComp(rel.packet_id))
    await client.send(PingReq())
    await client.expect(PingResp)  # acknowledged messages are not sent a third time
    await client.nothing(1.0)
    await goodbye(client)
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="slow-1", clean=False)
    await client.nothing(1.0)  # the PUBCOMP completed the flow for good
    await goodbye(client)
    await publisher.close()


async def test_qos2_from_the_client_survives_a_reconnect_without_duplicates(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    watcher, _ = await RawClient.connect(gateway.mqtt_port, token)
    await watcher.subscribe(("q2/#", 2))
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="q2-sender", clean=False)
    await client.send(Publish("q2/x", b"exactly once", 2, False, False, 9))
    assert (await client.expect(PubRec)).packet_id == 9
    await client.close()  # the PUBREL never left
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="q2-sender", clean=False)
    assert connack.session_present
    await client.send(Publish("q2/x", b"exactly once", 2, False, True, 9))  # the client re-sends [MQTT-4.4.0-1]
    assert (await client.expect(PubRec)).packet_id == 9
    await client.send(PubRel(9))
    assert (await client.expect(PubComp)).packet_id == 9
    got = await receive(watcher, 1)
    assert got[0].payload == b"exactly once"
    await quiet(watcher, 1.0)  # stored once [MQTT-4.3.3-2]
    await goodbye(client)
    await watcher.close()


async def test_clean_session_discards_the_stored_session(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="c-1", clean=False)
    await client.subscribe(("news", 1))
    await goodbye(client)
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="c-1", clean=True)
    assert connack.session_present is False  # [MQTT-3.2.2-1]
    await goodbye(client)
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="c-1", clean=False)
    assert connack.session_present is False  # the old session is gone [MQTT-3.1.2-6]
    await http_publish(gateway, token, "news", "not for the new session")
    await client.nothing(1.0)
    await goodbye(client)


@pytest.fixture
def replicas(make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]) -> tuple[NatsServer, Any]:
    nats = make_nats()
    shared = {"secret_key": "s" * 40, "admin_key": "fga_test_" + "k" * 30}

    def start() -> Gateway:
        return make_gateway(nats.url, **shared)

    return nats, start


async def test_session_survives_gateway_restart_and_moves_between_replicas(replicas: tuple[NatsServer, Any]) -> None:
    _, start = replicas
    first = start()
    _, token = first.user_token()
    client, _ = await RawClient.connect(first.mqtt_port, token, client_id="roamer", clean=False)
    await client.subscribe(("fleet/+/pos", 1))
    await http_publish(first, token, "fleet/7/pos", "before")
    [m] = await receive(client, 1, ack=False)  # in flight when the gateway goes away
    await client.close()
    first.stop()
    second = start()  # a restart: a new process on the same NATS
    await http_publish(second, token, "fleet/8/pos", "while away")
    client, connack = await RawClient.connect(second.mqtt_port, token, client_id="roamer", clean=False)
    assert connack.session_present is True
    got = await receive(client, 2)
    assert [(g.payload, g.dup) for g in got] == [(b"before", True), (b"while away", False)]
    assert got[0].packet_id == m.packet_id
    # Takeover across replicas: the same client id on a third replica closes this connection [MQTT-3.1.4-2].
    third = start()
    other, connack = await RawClient.connect(third.mqtt_port, token, client_id="roamer", clean=False)
    assert connack.session_present is True
    assert await client.closed_by_server()
    await http_publish(third, token, "fleet/9/pos", "on the third")
    [g] = await receive(other, 1)
    assert g.payload == b"on the third"
    await goodbye(other)


async def test_nats_outage_closes_publishers_unacknowledged_then_recovers(
    make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]
) -> None:
    """A QoS 1 publish NATS cannot store gets no PUBACK (the connection closes, the client re-sends later).
    A clean session with a QoS 1 subscription on the hub's core tier, which replays nothing, is closed when the
    bus connection drops, rather than miss messages without knowing; QoS 0 (at most once), QoS 2 (stored tier)
    and persistent subscribers stay, and after NATS returns everyone receives again."""
    nats = make_nats()
    gw = make_gateway(nats.url)
    _, token = gw.user_token()
    subs = {}
    for qos in (0, 1, 2):
        subs[qos], _ = await RawClient.connect(gw.mqtt_port, token, client_id=f"live-{qos}")
        assert (await subs[qos].subscribe(("out/#", qos))).return_codes == (qos,)
    durable, _ = await RawClient.connect(gw.mqtt_port, token, client_id="durable", clean=False)
    await durable.subscribe(("out/#", 1))
    pub, _ = await RawClient.connect(gw.mqtt_port, token, client_id="pub")
    await pub.publish("out/before", b"before", 1)
    for client in (*subs.values(), durable):
        assert (await receive(client, 1))[0].payload == b"before"
    nats.stop()
    assert await subs[1].closed_by_server(timeout=15)  # its clean session ends with the bus connection
    await pub.send(Publish("out/during", b"during", 1, False, False, 77))
    assert await pub.closed_by_server(timeout=15)  # no PUBACK for a message that was not stored
    nats.start()

    async def reconnect(client_id: str) -> RawClient:
        async with asyncio.timeout(30):
            while True:  # the client reconnects until the gateway can take sessions again
                client, connack = await RawClient.connect(gw.mqtt_port, token, client_id=client_id)
                if connack.return_code == 0:
                    return client
                await asyncio.sleep(0.5)  # a client's reconnect back-off: the behaviour simulated

    pub = await reconnect("pub")
    subs[1] = await reconnect("live-1")
    assert (await subs[1].subscribe(("out/#", 1))).return_codes == (1,)
    await pub.publish("out/during", b"during", 1)  # the re-send
    for client in (subs[0], subs[2], durable):
        assert (await receive(client, 1, timeout=30))[0].payload == b"during"
    assert (await receive(subs[1], 1, timeout=30))[0].payload == b"during"
    for c in (*subs.values(), durable, pub):
        await c.close()


def test_a_paho_device_rides_out_a_nats_restart_by_reconnecting(
    make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]
) -> None:
    """What a device sees when the gateway's NATS goes away under a clean-session QoS 1 subscription: the
    gateway closes the connection (hub.py), paho reconnects by itself, subscribes again in ``on_connect``
    as clean-session clients do, and receives what is published after that, at QoS 1."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    nats = make_nats()
    gw = make_gateway(nats.url)
    _, token = gw.user_token()
    connects: list[int] = []
    subscribed = threading.Event()
    dropped = threading.Event()
    got: list[Any] = []
    arrived = threading.Condition()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="paho-device", protocol=paho.MQTTv311)
    client.username_pw_set("Bearer", token)
    client.reconnect_delay_set(min_delay=1, max_delay=2)

    def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        connects.append(reason.value)
        if reason.value == 0:
            c.subscribe("dev/cmd", qos=1)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        with arrived:
            got.append(message)
            arrived.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_disconnect = lambda *a: dropped.set()
    client.on_message = on_message
    client.connect("127.0.0.1", gw.mqtt_port, keepalive=30)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        subscribed.clear()
        nats.stop()
        assert dropped.wait(15)  # closed by the gateway: its QoS 1 subscription could miss messages now
        nats.start()
        assert subscribed.wait(60)  # reconnected (after CONNACK 3 while the gateway waited for NATS)
        assert connects[0] == 0 and connects[-1] == 0 and len(connects) >= 2
        token_client = httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        with token_client, arrived:
            answer = token_client.post("/api/v1/publish", json={"topic": "dev/cmd", "message": "after the restart"})
            assert answer.status_code == 200, answer.text
            assert arrived.wait_for(lambda: bool(got), timeout=15)
        assert (got[0].topic, got[0].payload, got[0].qos) == ("dev/cmd", b"after the restart", 1)
    finally:
        client.disconnect()
        client.loop_stop()
