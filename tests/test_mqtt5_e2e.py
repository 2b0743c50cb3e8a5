"""MQTT 5.0 end to end through the real gateway on a real nats-server (one gateway for the module).

Written from the OASIS MQTT 5.0 normative statements (cited per test), with our
v5 codec as a precise test client (``tests/mqtt5_client.py``), paho-mqtt in
MQTTv5 mode and ``mosquitto_pub``/``mosquitto_sub -V mqttv5``.
"""

from __future__ import annotations

import asyncio

import pytest

from protocols.mqtt.packets import (
    Auth,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from protocols.mqtt.properties import Properties
from tests.harness import Gateway
from tests.mqtt5_client import Raw5

pytestmark = pytest.mark.timeout(60)


async def next_publish(client: Raw5, timeout: float = 10) -> Publish:
    while True:
        packet = await client.recv(timeout)
        if isinstance(packet, Publish):
            await client.acknowledge(packet)
            return packet


async def test_connect_v5_connack_properties_and_assigned_client_id(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await Raw5.connect5(gateway.mqtt_port, token, keepalive=0)
    assert connack.return_code == 0 and not connack.session_present
    props = connack.properties
    assert props.assigned_client_identifier  # empty client id [MQTT-3.2.2-16]
    assert props.receive_maximum and props.maximum_packet_size and props.topic_alias_maximum
    assert props.server_keep_alive == 3600  # keep alive 0 gets the server's [MQTT-3.2.2-21]
    await client.send(PingReq())
    await client.expect(PingResp)
    await client.close()


async def test_bad_credentials_and_bad_auth_method_get_v5_reason_codes(gateway: Gateway) -> None:
    client, connack = await Raw5.connect5(gateway.mqtt_port, "not-a-jwt")
    assert connack.return_code == 0x86 and connack.properties.reason_string
    assert await client.closed_by_server()  # [MQTT-3.2.2-7]
    _, token = gateway.user_token()
    props = Properties(authentication_method="SCRAM-SHA-1")
    client, connack = await Raw5.connect5(gateway.mqtt_port, token, properties=props)
    assert connack.return_code == 0x8C
    assert await client.closed_by_server()


async def test_publish_subscribe_with_reason_codes_and_properties(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-sub")
    props = Properties(subscription_identifiers=(7,))
    await sub.send(Subscribe(1, (("v5/+", 1),), props, (0x01,)))
    suback = await sub.expect(SubAck)
    assert suback.return_codes == (1,)
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-pub")
    message = Properties(
        payload_format_indicator=1,
        content_type="application/json",
        response_topic="v5/replies",
        correlation_data=b"\x00\x01",
        user_properties=(("a", "1"), ("a", "2"), ("ü", "ß")),
        message_expiry_interval=120,
    )
    ack = await pub.publish5("v5/x", b'{"v":1}', 1, properties=message)
    assert ack == PubAck(1)
    got = await next_publish(sub)
    assert (got.topic, got.payload, got.qos) == ("v5/x", b'{"v":1}', 1)
    p = got.properties
    assert p.content_type == "application/json" and p.payload_format_indicator == 1
    assert p.response_topic == "v5/replies" and p.correlation_data == b"\x00\x01"
    assert p.user_properties == (("a", "1"), ("a", "2"), ("ü", "ß"))
    assert p.subscription_identifiers == (7,)  # [MQTT-3.3.4-3]
    assert p.message_expiry_interval is not None and 0 < p.message_expiry_interval <= 120  # [MQTT-3.3.2-6]
    await sub.send(Unsubscribe(2, ("v5/+", "v5/none")))
    unsuback = await sub.expect(UnsubAck)
    assert unsuback.reason_codes == (0x00, 0x11)
    await pub.close()
    await sub.close()


async def test_forbidden_gets_0x87_on_suback_and_puback(gateway: Gateway) -> None:
    _, key = gateway.new_user()
    permissions = {"publish": {"allow": ["open/#"]}, "subscribe": {"allow": ["open/#"]}}
    client, _ = await Raw5.connect5(gateway.mqtt_port, gateway.token(key, permissions=permissions))
    await client.send(Subscribe(1, (("open/a", 1), ("closed/a", 1), ("$share/g/open/a", 1))))
    assert (await client.expect(SubAck)).return_codes == (1, 0x87, 0x9E)
    assert await client.publish5("closed/a", b"x", 1) == PubAck(1, 0x87)  # [3.4.2.1]
    rec = await client.publish5("closed/a", b"x", 2)
    assert rec is not None and getattr(rec, "reason_code", 0) == 0x87
    await client.send(PingReq())
    await client.expect(PingResp)  # the connection stays up
    await client.close()


async def test_topic_aliases_both_ways_and_receive_maximum(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(
        gateway.mqtt_port, token, properties=Properties(topic_alias_maximum=5, receive_maximum=2)
    )
    await sub.send(Subscribe(1, (("alias/t", 1),)))
    await sub.expect(SubAck)
    pub, connack = await Raw5.connect5(gateway.mqtt_port, token)
    assert connack.properties.topic_alias_maximum
    await pub.publish5("alias/t", b"1", 1, properties=Properties(topic_alias=1))
    for n in (2, 3, 4):
        await pub.publish5("", str(n).encode(), 1, properties=Properties(topic_alias=1))  # [MQTT-3.3.2-12]
    first = await sub.recv()
    second = await sub.recv()
    assert isinstance(first, Publish) and isinstance(second, Publish)
    assert (first.topic, first.properties.topic_alias, first.payload) == ("alias/t", 1, b"1")
    assert (second.topic, second.properties.topic_alias, second.payload) == ("", 1, b"2")
    await sub.nothing(0.3)  # Receive Maximum 2: no third until one is acknowledged [MQTT-3.3.4-7]
    await sub.acknowledge(first)
    third = await sub.recv()
    assert isinstance(third, Publish) and third.payload == b"3"
    await pub.close()
    await sub.close()


async def test_protocol_errors_get_a_disconnect_with_a_reason_code(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await client.send(Publish("a", b"", properties=Properties(topic_alias=255)))  # above the maximum [MQTT-3.3.2-8]
    disconnect = await client.expect(Disconnect)
    assert disconnect.reason_code == 0x94
    assert await client.closed_by_server()
    client, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await client.send_raw(bytes.fromhex("3006000161027f00"))  # unknown property [2.2.2.2]
    assert (await client.expect(Disconnect)).reason_code == 0x81
    other, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await other.send(PingReq())
    await other.expect(PingResp)  # the server keeps serving others
    await other.close()


async def test_session_taken_over_gets_0x8e(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    first, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-take")
    second, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-take")
    assert (await first.expect(Disconnect)).reason_code == 0x8E  # [MQTT-3.1.4-3]
    await second.close()


async def test_reauthentication_with_a_fresh_jwt(gateway: Gateway) -> None:
    _, key = gateway.new_user()
    token = gateway.token(key, ttl=3)
    props = Properties(authentication_method="JWT", authentication_data=token.encode())
    client, connack = await Raw5.connect5(gateway.mqtt_port, None, username=None, properties=props)
    assert connack.return_code == 0 and connack.properties.authentication_method == "JWT"
    fresh = await asyncio.to_thread(gateway.token, key, ttl=60)
    await client.send(Auth(0x19, Properties(authentication_method="JWT", authentication_data=fresh.encode())))
    assert (await client.expect(Auth)).reason_code == 0
    await client.nothing(4.0)  # the first token's expiry passed: still connected
    await client.send(PingReq())
    await client.expect(PingResp)
    other = await asyncio.to_thread(gateway.user_token)
    await client.send(Auth(0x19, Properties(authentication_method="JWT", authentication_data=other[1].encode())))
    assert (await client.expect(Disconnect)).reason_code == 0x87
    await client.close()
