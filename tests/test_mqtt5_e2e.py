"""MQTT 5.0 end to end through the real gateway on a real nats-server (one gateway for the module).

Written from the OASIS MQTT 5.0 normative statements (cited per test), with our
v5 codec as a precise test client (``tests/mqtt5_client.py``), paho-mqtt in
MQTTv5 mode and ``mosquitto_pub``/``mosquitto_sub -V mqttv5``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from protocols.mqtt.codec5 import encode5
from protocols.mqtt.packets import (
    Auth,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from protocols.mqtt.properties import Properties
from tests.harness import Gateway
from tests.mqtt5_client import Raw5
from tests.mqtt_client import RawClient

pytestmark = pytest.mark.timeout(60)
LINE_BUFFERED = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients not installed")


async def test_connect_v5_connack_properties_and_assigned_client_id(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await Raw5.connect5(gateway.mqtt_port, token, keepalive=0)
    assert connack.return_code == 0 and not connack.session_present
    props = connack.properties
    assert props.assigned_client_identifier  # empty client id [MQTT-3.2.2-16]
    assert props.receive_maximum and props.maximum_packet_size and props.topic_alias_maximum
    assert props.server_keep_alive == 60  # keep alive 0 gets the server's [MQTT-3.2.2-21]
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
    plain, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-sub0")
    await plain.send(Subscribe(1, (("v5/x", 0),)))
    await plain.expect(SubAck)
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
    got = await sub.next_publish()
    assert (got.topic, got.payload, got.qos) == ("v5/x", b'{"v":1}', 1)
    p = got.properties
    assert p.content_type == "application/json" and p.payload_format_indicator == 1
    assert p.response_topic == "v5/replies" and p.correlation_data == b"\x00\x01"
    assert p.user_properties == (("a", "1"), ("a", "2"), ("ü", "ß"))
    assert p.subscription_identifiers == (7,)  # [MQTT-3.3.4-3]
    assert p.message_expiry_interval is not None and 0 < p.message_expiry_interval <= 120  # [MQTT-3.3.2-6]
    at_qos0 = await plain.next_publish()  # rendered once for all QoS 0 subscribers without their own properties
    assert at_qos0.qos == 0 and at_qos0.properties.user_properties == p.user_properties
    assert at_qos0.properties.content_type == "application/json" and not at_qos0.properties.subscription_identifiers
    await sub.send(Unsubscribe(2, ("v5/+", "v5/none")))
    unsuback = await sub.expect(UnsubAck)
    assert unsuback.reason_codes == (0x00, 0x11)
    await pub.publish5("v5/x", b"again", 0, properties=Properties(user_properties=(("b", "2"),)))
    again = await plain.next_publish()
    assert (again.payload, again.properties.user_properties) == (b"again", (("b", "2"),))
    await plain.close()
    await pub.close()
    await sub.close()


async def test_forbidden_gets_0x87_on_suback_and_puback(gateway: Gateway) -> None:
    _, key = gateway.new_user()
    permissions = {"publish": {"allow": ["open/#"]}, "subscribe": {"allow": ["open/#"]}}
    client, _ = await Raw5.connect5(gateway.mqtt_port, gateway.token(key, permissions=permissions))
    filters = (("open/a", 1), ("closed/a", 1), ("$share/g/closed/a", 1), ("$share/g+/open/a", 1), ("open/+/#/x", 1))
    await client.send(Subscribe(1, filters))
    # not authorised 0x87 [3.9.3], a bad shared name or filter 0x8F [MQTT-4.8.2-1]
    assert (await client.expect(SubAck)).return_codes == (1, 0x87, 0x87, 0x8F, 0x8F)
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


# -- real clients: paho-mqtt v5, mosquitto -V mqttv5, and the JSON front-ends ---------------------------


def test_paho_v5_properties_no_local_and_shared_limits(gateway: Gateway) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties as PahoProperties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    _, token = gateway.user_token()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    events = {name: threading.Event() for name in ("a-sub", "b-sub", "a-msg", "b-msg")}

    def client(name: str) -> Any:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"paho5-{name}", protocol=paho.MQTTv5)
        c.username_pw_set("Bearer", token)
        c.on_subscribe = lambda *_a: events[f"{name}-sub"].set()

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            got[name].append(message)
            events[f"{name}-msg"].set()

        c.on_message = on_message
        c.connect("127.0.0.1", gateway.mqtt_port, keepalive=30, clean_start=True)
        c.loop_start()
        return c

    a, b = client("a"), client("b")
    try:
        a.subscribe([("paho5/t", SubscribeOptions(qos=1, noLocal=True))])
        b.subscribe([("paho5/t", SubscribeOptions(qos=1))])
        assert events["a-sub"].wait(10) and events["b-sub"].wait(10)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.UserProperty = [("trace", "42")]
        props.ContentType = "text/plain"
        props.ResponseTopic = "paho5/reply"
        props.CorrelationData = b"c-1"
        a.publish("paho5/t", b"from a", qos=1, properties=props).wait_for_publish(10)
        assert events["b-msg"].wait(10)
        message = got["b"][0]
        assert (message.topic, message.payload) == ("paho5/t", b"from a")
        assert message.properties.UserProperty == [("trace", "42")]
        assert message.properties.ContentType == "text/plain"
        assert message.properties.ResponseTopic == "paho5/reply"
        assert message.properties.CorrelationData == b"c-1"
        b.publish("paho5/t", b"from b", qos=1).wait_for_publish(10)
        assert events["a-msg"].wait(10)
        assert [m.payload for m in got["a"]] == [b"from b"]  # No Local: not its own [MQTT-3.8.3-3]
    finally:
        for c in (a, b):
            c.disconnect()
            c.loop_stop()


def test_paho_v5_overlapping_subscriptions_get_one_copy_with_both_identifiers(gateway: Gateway) -> None:
    """Paho's subscribe identifiers test: 'TopicA' id 2 and 'TopicA/#' id 3, one message on 'TopicA': one
    copy carrying both identifiers [MQTT-3.3.4-4]. A message on a third topic, published after it and
    arriving after it, says no second copy is coming."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties as PahoProperties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    _, token = gateway.user_token()
    got: list[Any] = []
    subscribed, done = threading.Semaphore(0), threading.Event()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        got.append(message)
        if message.topic == "TopicB":
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="paho5-ids", protocol=paho.MQTTv5)
    c.username_pw_set("Bearer", token)
    c.on_subscribe = lambda *_a: subscribed.release()
    c.on_message = on_message
    c.connect("127.0.0.1", gateway.mqtt_port, keepalive=30, clean_start=True)
    c.loop_start()
    try:
        for topic, identifier in (("TopicA", 2), ("TopicA/#", 3), ("TopicB", 4)):
            props = PahoProperties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = identifier
            c.subscribe([(topic, SubscribeOptions(qos=1))], properties=props)
            assert subscribed.acquire(timeout=10)
        c.publish("TopicA", b"overlapping", qos=1).wait_for_publish(10)
        c.publish("TopicB", b"after", qos=1).wait_for_publish(10)
        assert done.wait(10)
        assert [(m.topic, m.payload) for m in got] == [("TopicA", b"overlapping"), ("TopicB", b"after")]
        assert sorted(got[0].properties.SubscriptionIdentifier) == [2, 3]
    finally:
        c.disconnect()
        c.loop_stop()


@needs_mosquitto
def test_mosquitto_v5_properties_and_sse_sees_them(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    common = ["-h", "127.0.0.1", "-p", str(gateway.mqtt_port), "-u", "Bearer", "-P", token, "-V", "mqttv5"]
    sub = subprocess.Popen(
        [*LINE_BUFFERED, "mosquitto_sub", *common, "-t", "mosq5/#", "-C", "1", "-W", "30", "-d", "-q", "1",
         "-F", "%t|%p|%C|%P|%R|%E"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert sub.stdout is not None
        for line in sub.stdout:
            if "SUBACK" in line:
                break
        done = subprocess.run(
            ["mosquitto_pub", *common, "-t", "mosq5/a", "-m", "hello v5", "-q", "1",
             "-D", "publish", "content-type", "text/plain", "-D", "publish", "user-property", "k", "v",
             "-D", "publish", "response-topic", "mosq5/r", "-D", "publish", "message-expiry-interval", "300"],
            capture_output=True,
            text=True,
            timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out, _ = sub.communicate(timeout=30)
    finally:
        sub.kill()
    [line] = [line for line in out.splitlines() if line.startswith("mosq5/a|")]
    _, payload, content_type, user, response, expiry = line.split("|")
    assert (payload, content_type, user, response) == ("hello v5", "text/plain", "k:v", "mosq5/r")
    assert 0 < int(expiry) <= 300
    # The same message replayed over SSE: properties as a "properties" field (README, MQTT 5).
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        params = {"topic": "mosq5/#", "token": token, "last_event_id": "0"}
        with http.stream("GET", "/api/v1/subscribe", params=params) as stream:
            kind = "message"
            for raw in stream.iter_lines():
                if raw.startswith("event: "):
                    kind = raw[7:]  # a shared session stream may first say `event: gap` (retention)
                elif raw.startswith("data: ") and kind == "message":
                    event = orjson.loads(raw[6:])
                    break
    assert event["data"] == "hello v5", event
    assert event["properties"]["content_type"] == "text/plain"
    assert event["properties"]["user_properties"] == [["k", "v"]]
    assert event["properties"]["response_topic"] == "mosq5/r"


async def test_persistent_v5_session_message_expiry_and_session_expiry(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    props = Properties(session_expiry_interval=300)
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-keep", clean=True, properties=props)
    await sub.send(Subscribe(1, (("keep/#", 1),)))
    await sub.expect(SubAck)
    await sub.send(Disconnect())
    assert await sub.closed_by_server()
    old, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="v311-keep", clean=False)
    await old.subscribe(("keep/#", 1))
    await old.close()
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await pub.publish5("keep/short", b"expires", 1, properties=Properties(message_expiry_interval=1))
    await pub.publish5("keep/long", b"stays", 1, properties=Properties(message_expiry_interval=600))
    await asyncio.sleep(1.5)  # the condition under test is time passing: the first message's lifetime runs out
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-keep", clean=False, properties=props)
    assert connack.session_present  # [MQTT-3.2.2-3]
    got = await sub.next_publish()
    assert got.payload == b"stays"  # the expired one is not delivered [MQTT-3.3.2-5]
    assert got.properties.message_expiry_interval is not None and got.properties.message_expiry_interval < 600
    await sub.nothing(0.5)
    old, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="v311-keep", clean=False)
    assert (await old.next_publish()).payload == b"stays"  # a 3.1.1 session does not get it either
    await old.close()
    # Session Expiry Interval 0 on DISCONNECT ends the session [3.14.2.2.2]: the next connect finds none.
    await sub.send(Disconnect(0, Properties(session_expiry_interval=0)))
    assert await sub.closed_by_server()
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-keep", clean=False, properties=props)
    assert not connack.session_present
    await sub.close()
    await pub.close()


def test_paho_v5_over_websocket(gateway: Gateway) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties as PahoProperties

    _, token = gateway.user_token()
    arrived = threading.Event()
    subscribed = threading.Event()
    got: list[Any] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="ws-paho5", transport="websockets", protocol=paho.MQTTv5
    )
    client.ws_set_options(path="/mqtt")
    client.username_pw_set("Bearer", token)
    client.on_subscribe = lambda *a: subscribed.set()

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        got.append(message)
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", gateway.http_port, keepalive=30)
    client.loop_start()
    try:
        client.subscribe("ws5/#", qos=2)
        assert subscribed.wait(10)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.UserProperty = [("via", "ws")]
        client.publish("ws5/echo", b"over websocket", qos=2, properties=props).wait_for_publish(10)
        assert arrived.wait(10)
        assert (got[0].topic, got[0].payload, got[0].qos) == ("ws5/echo", b"over websocket", 2)
        assert got[0].properties.UserProperty == [("via", "ws")]
    finally:
        client.disconnect()
        client.loop_stop()


async def will_watcher(gateway: Gateway, token: str) -> Raw5:
    """An MQTT 5 client subscribed to every will of the will tests (``wills/#``)."""
    watcher, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await watcher.send(Subscribe(1, (("wills/#", 0),)))
    await watcher.expect(SubAck)
    return watcher


async def test_will_delay_interval_and_a_session_resumed_in_time(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    watcher = await will_watcher(gateway, token)
    keep = Properties(session_expiry_interval=60)

    def will(payload: bytes, delay: int) -> Will:
        return Will("wills/dev", payload, 0, False, Properties(will_delay_interval=delay))

    first, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-will", will=will(b"a", 30), properties=keep)
    await first.close()  # no DISCONNECT: the will waits 30 s
    second, connack = await Raw5.connect5(
        gateway.mqtt_port, token, client_id="v5-will", clean=False, will=will(b"b", 1), properties=keep
    )
    assert connack.session_present  # resumed within the delay: "a" is never published [MQTT-3.1.3-9]
    await second.close()
    got = await watcher.next_publish()
    assert (got.topic, got.payload) == ("wills/dev", b"b")
    await watcher.nothing(0.5)
    await watcher.close()


async def test_a_session_taken_over_within_the_will_delay_sends_no_will(gateway: Gateway) -> None:
    """The new connection takes the session from one still open: the old one's delayed will is never
    published, since the session was taken up again before the delay passed [MQTT-3.1.3-9]."""
    _, token = gateway.user_token()
    watcher = await will_watcher(gateway, token)
    keep = Properties(session_expiry_interval=60)
    will = Will("wills/taken", b"gone", 0, False, Properties(will_delay_interval=1))
    first, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-taken", will=will, properties=keep)
    second, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-taken", clean=False, properties=keep)
    assert connack.session_present
    assert await first.closed_by_server()  # DISCONNECT 0x8E, then closed
    await watcher.nothing(2.0)  # past the 1 s delay: no will
    await second.send(Disconnect())
    await second.close()
    await first.close()
    await watcher.close()


async def test_a_session_taken_over_with_clean_start_ends_and_sends_the_will_at_once(gateway: Gateway) -> None:
    """A takeover with Clean Start 1 ends the old session, so its will goes out then, not after the
    Will Delay Interval: "after the delay or when the session ends, whichever happens first" [3.1.3.2.2]."""
    _, token = gateway.user_token()
    watcher = await will_watcher(gateway, token)
    keep = Properties(session_expiry_interval=60)
    will = Will("wills/ended", b"ended", 0, False, Properties(will_delay_interval=60))
    first, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-ended", will=will, properties=keep)
    second, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="v5-ended", clean=True)
    assert not connack.session_present
    got = await watcher.next_publish()  # well before the 60 s delay (next_publish waits 10 s at most)
    assert (got.topic, got.payload) == ("wills/ended", b"ended")
    await second.send(Disconnect())
    await second.close()
    await first.close()
    await watcher.close()


async def test_shared_subscription_across_replicas_with_redelivery_to_another_member(
    gateway: Gateway, make_gateway: Callable[..., Gateway]
) -> None:
    """``$share/<group>/<filter>`` [4.8.2]: each message to one member, whichever replica it is on, and what a
    member leaves unacknowledged goes to another member; a 3.1.1 client may be a member too."""
    there = make_gateway(gateway.nats_url, secret_key=gateway.secret_key, admin_key=gateway.admin_key)
    _, token = gateway.user_token()
    holder, _ = await Raw5.connect5(gateway.mqtt_port, token, properties=Properties(receive_maximum=2))
    await holder.send(Subscribe(1, (("$share/workers/jobs/#", 1),)))
    assert (await holder.expect(SubAck)).return_codes == (1,)
    worker, _ = await RawClient.connect(there.mqtt_port, token)  # MQTT 3.1.1, on the other replica
    assert (await worker.subscribe(("$share/workers/jobs/#", 1))).return_codes == (1,)
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    sent = {f"job-{n}".encode() for n in range(6)}
    for payload in sorted(sent):
        await pub.publish5("jobs/a", payload, 1)
    held = await holder.recv()  # never acknowledged
    assert isinstance(held, Publish) and held.payload in sent
    await holder.close()  # gone without PUBACK: its messages go to the other member
    got: list[bytes] = []
    while len(got) < len(sent):
        packet = await worker.recv()
        if isinstance(packet, Publish):
            got.append(packet.payload)
            await worker.acknowledge(packet)
    assert sorted(got) == sorted(sent)  # each once, including what the holder had
    await worker.nothing(0.5)
    await worker.close()
    # A persistent MQTT 5 session resumed on the other replica, with what was published meanwhile.
    keep = Properties(session_expiry_interval=120)
    device, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="roamer", properties=keep)
    await device.send(Subscribe(1, (("roam/#", 1),), Properties(subscription_identifiers=(3,))))
    await device.expect(SubAck)
    await device.send(Disconnect())
    assert await device.closed_by_server()
    await pub.publish5("roam/x", b"while away", 1, properties=Properties(content_type="text/plain"))
    device, connack = await Raw5.connect5(there.mqtt_port, token, client_id="roamer", clean=False, properties=keep)
    assert connack.session_present
    got_back = await device.next_publish()
    assert (got_back.payload, got_back.properties.content_type) == (b"while away", "text/plain")
    assert got_back.properties.subscription_identifiers == (3,)  # kept with the session's subscription
    await device.close()
    await pub.close()


async def test_receive_maximum_exceeded_and_pubrel_for_an_unknown_id(gateway: Gateway) -> None:
    _, key = gateway.new_user(plan="pro")  # a publish rate the burst below stays within
    token = gateway.token(key)
    client, connack = await Raw5.connect5(gateway.mqtt_port, token)
    await client.send(PubRel(77))
    assert await client.expect(PubComp) == PubComp(77, 0x92)  # Packet Identifier not found [3.7.2.1]
    limit = connack.properties.receive_maximum
    assert limit is not None
    # QoS 2 publishes stay unacknowledged until PUBREL: one more than the Receive Maximum is 0x93 [MQTT-3.3.4-8]
    await client.send_raw(b"".join(encode5(Publish("rm/t", b"x", 2, packet_id=i + 1)) for i in range(limit + 1)))
    while not isinstance(packet := await client.recv(), Disconnect):
        assert isinstance(packet, PubRec)
    assert packet.reason_code == 0x93


async def test_http_publish_sets_properties_an_mqtt5_subscriber_gets(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await sub.send(Subscribe(1, (("http5/#", 1),)))
    await sub.expect(SubAck)
    properties = {
        "content_type": "application/json",
        "response_topic": "http5/reply",
        "correlation_data": "AAE=",
        "user_properties": [["source", "http"]],
        "message_expiry_interval": 60,
    }

    def post(body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.post(gateway.base_url + "/api/v1/publish", headers=headers, json=body, timeout=10)

    answer = await asyncio.to_thread(post, {"topic": "http5/a", "message": {"n": 1}, "properties": properties})
    assert answer.status_code == 200, answer.text
    got = await sub.next_publish()
    p = got.properties
    assert (got.payload, p.content_type, p.response_topic) == (b'{"n":1}', "application/json", "http5/reply")
    assert p.correlation_data == b"\x00\x01" and p.user_properties == (("source", "http"),)
    assert p.message_expiry_interval is not None and 0 < p.message_expiry_interval <= 60
    bad = await asyncio.to_thread(post, {"topic": "http5/a", "message": 1, "properties": {"user_properties": "x"}})
    assert bad.status_code == 400 and "user_properties" in bad.text
    await sub.close()


def test_paho_shared_subscription_spreads_a_burst_over_the_members(gateway: Gateway) -> None:
    """As the Paho MQTT 5 interoperability suite checks it: 10 QoS 0 messages, each to one member, both get some."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    _, token = gateway.user_token()
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    subscribed = {name: threading.Event() for name in got}
    enough = threading.Event()

    def member(name: str) -> Any:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"share-{name}", protocol=paho.MQTTv5)
        c.username_pw_set("Bearer", token)
        c.on_subscribe = lambda *_a: subscribed[name].set()

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            got[name].append(message.payload)
            if sum(len(v) for v in got.values()) >= 10:
                enough.set()

        c.on_message = on_message
        c.connect("127.0.0.1", gateway.mqtt_port, keepalive=30, clean_start=True)
        c.loop_start()
        c.subscribe("$share/sharename/burst/x", qos=0)
        return c

    clients = [member("a"), member("b")]
    try:
        assert all(event.wait(10) for event in subscribed.values())
        for i in range(10):
            clients[1].publish("burst/x", f"message {i}".encode(), qos=0)
        assert enough.wait(10)
        assert sorted(got["a"] + got["b"]) == sorted(f"message {i}".encode() for i in range(10))
        assert got["a"] and got["b"]
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()


async def test_a_shared_subscription_starting_with_a_wildcard_gets_no_dollar_topics(gateway: Gateway) -> None:
    """[MQTT-4.7.2-1] for shared subscriptions too: ``$share/g/#`` does not get the namespace's ``$events/...``."""
    _, token = gateway.user_token()
    witness, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await witness.send(Subscribe(1, (("$events/connected", 1),)))
    await witness.expect(SubAck)
    member, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await member.send(Subscribe(1, (("$share/g/#", 1),)))
    await member.expect(SubAck)
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="after-the-member")
    while b"after-the-member" not in (await witness.next_publish()).payload:
        pass  # stored after the member joined: its consumer reaches it before what is published next
    await pub.publish5("jobs/a", b"job", 1)
    got = await member.next_publish()
    assert (got.topic, got.payload) == ("jobs/a", b"job")
    for client in (witness, member, pub):
        await client.close()


async def test_no_local_on_a_shared_subscription_is_a_protocol_error(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await client.send(Subscribe(1, (("$share/g/nl", 1),), options=(0x05,)))
    assert (await client.expect(Disconnect)).reason_code == 0x82  # [MQTT-3.8.3-4]
    assert await client.closed_by_server()


async def test_retain_handling_and_retain_as_published(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await pub.publish5("rh/t", b"kept", 1, retain=True)

    async def subscriber(options: int, topic: str = "rh/t") -> Raw5:
        client, _ = await Raw5.connect5(gateway.mqtt_port, token)
        await client.send(Subscribe(1, ((topic, 1),), options=(options,)))
        await client.expect(SubAck)
        return client

    never = await subscriber(0x21)  # Retain Handling 2: no retained messages [MQTT-3.3.1-11]
    if_new = await subscriber(0x11)  # 1: only for a new subscription [MQTT-3.3.1-10]
    always = await subscriber(0x01)  # 0: at every subscribe [MQTT-3.3.1-9]
    for client in (if_new, always):
        got = await client.next_publish()
        assert (got.payload, got.retain) == (b"kept", True)
    for client, options in ((if_new, 0x11), (always, 0x01)):  # subscribing again: the subscription exists
        await client.send(Subscribe(2, (("rh/t", 1),), options=(options,)))
        await client.expect(SubAck)
    assert (await always.next_publish()).payload == b"kept"
    await never.nothing(0.3)
    await if_new.nothing(0.3)
    as_published = await subscriber(0x09, "rh/live")  # Retain As Published [MQTT-3.3.1-12]
    plain = await subscriber(0x01, "rh/live")
    await pub.publish5("rh/live", b"now", 1, retain=True)
    assert (await as_published.next_publish()).retain is True
    assert (await plain.next_publish()).retain is False  # [MQTT-3.3.1-13]
    await pub.publish5("rh/live", b"", 1, retain=True)  # clear it again
    for client in (pub, never, if_new, always, as_published, plain):
        await client.close()


async def test_a_rate_limited_publisher_gets_disconnect_0x96(gateway: Gateway) -> None:
    """3.1.1 could only stop reading; MQTT 5 says why: Message rate too high (the free plan: burst 1,000)."""
    _, token = gateway.user_token()
    client, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await client.send_raw(b"".join(encode5(Publish("rate/t", b"x")) for _ in range(3000)))
    assert (await client.expect(Disconnect)).reason_code == 0x96
    assert await client.closed_by_server()
