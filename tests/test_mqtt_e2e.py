"""MQTT 3.1.1 end to end through the real gateway on a real nats-server.

Written from the OASIS MQTT 3.1.1 normative statements (cited per test), with
our codec as a precise test client, the real ``mosquitto_pub``/``mosquitto_sub``
and ``paho-mqtt``.
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

from protocols.mqtt.codec import encode
from protocols.mqtt.packets import (
    CONNACK_BAD_CREDENTIALS,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_UNACCEPTABLE_PROTOCOL,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    UnsubAck,
    Unsubscribe,
    Will,
)
from tests.harness import Gateway, NatsServer
from tests.mqtt_client import RawClient, quiet

pytestmark = pytest.mark.timeout(120)

LINE_BUFFERED = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []  # mosquitto_sub's stdout is a pipe here
needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients not installed")


def http_publish(gateway: Gateway, token: str, topic: str, message: Any) -> dict[str, Any]:
    answer = httpx.post(
        gateway.base_url + "/api/v1/publish",
        headers={"Authorization": f"Bearer {token}"},
        json={"topic": topic, "message": message},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def publishes(client: RawClient, count: int, timeout: float = 10) -> list[Publish]:
    """The next ``count`` PUBLISH packets, acknowledging QoS 1/2 ones."""
    got: list[Publish] = []
    while len(got) < count:
        packet = await client.recv(timeout)
        if isinstance(packet, Publish):
            got.append(packet)
        await client.acknowledge(packet)
    return got


# -- the documented snippet ---------------------------------------------------------------------


@needs_mosquitto
def test_seed_snippet_mosquitto_pub_and_sub(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    common = ["-h", "127.0.0.1", "-p", str(gateway.mqtt_port), "-u", "Bearer", "-P", token]
    sub = subprocess.Popen(
        [*LINE_BUFFERED, "mosquitto_sub", *common, "-t", "notifications", "-C", "3", "-v", "-W", "30", "-d"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sub.stdout is not None
        for line in sub.stdout:  # wait for the SUBACK before publishing (an event, not a sleep)
            if "SUBACK" in line:
                break
        for qos in ("0", "1", "2"):
            done = subprocess.run(
                ["mosquitto_pub", *common, "-t", "notifications", "-m", f"Hello from MQTT! q{qos}", "-q", qos],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert done.returncode == 0, done.stderr
        out, _ = sub.communicate(timeout=30)
    finally:
        sub.kill()
    received = [line for line in out.splitlines() if line.startswith("notifications ")]
    assert received == [f"notifications Hello from MQTT! q{q}" for q in "012"]


@needs_mosquitto
def test_mosquitto_full_names_and_http_cross_protocol(gateway: Gateway) -> None:
    user_id, token = gateway.user_token()
    full = f"{user_id}_app_alerts"
    common = ["-h", "127.0.0.1", "-p", str(gateway.mqtt_port), "-u", "Bearer", "-P", token]
    sub = subprocess.Popen(
        [*LINE_BUFFERED, "mosquitto_sub", *common, "-t", full, "-C", "2", "-v", "-W", "30", "-d", "-q", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sub.stdout is not None
        for line in sub.stdout:
            if "SUBACK" in line:
                break
        http_publish(gateway, token, "alerts", "Hello World!")  # a JSON string arrives as its UTF-8 text
        http_publish(gateway, token, full, {"level": 3})  # a JSON value arrives as its JSON bytes
        out, _ = sub.communicate(timeout=30)
    finally:
        sub.kill()
    received = [line for line in out.splitlines() if line.startswith(full)]
    assert received == [f"{full} Hello World!", f'{full} {{"level":3}}']


# -- CONNECT ---------------------------------------------------------------------------------------


async def test_connect_accepted_and_ping(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="dev-1")
    assert (connack.return_code, connack.session_present) == (0, False)  # [MQTT-3.2.2-1]
    await client.send(PingReq())
    await client.expect(PingResp)  # [MQTT-3.12.4-1]
    await client.close()


async def test_bad_credentials_get_connack_4(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    for username, password in (("Bearer", "not-a-jwt"), ("Bearer", token[:-3] + "abc"), ("alice", token)):
        client, connack = await RawClient.connect(gateway.mqtt_port, password, username=username)
        assert connack.return_code == CONNACK_BAD_CREDENTIALS
        assert await client.closed_by_server()  # [MQTT-3.2.2-5]
    client, connack = await RawClient.connect(gateway.mqtt_port, None, username=None)
    assert connack.return_code == CONNACK_BAD_CREDENTIALS


async def test_disabled_user_gets_connack_5(gateway: Gateway) -> None:
    user_id, key = gateway.new_user()
    token = gateway.token(key)
    assert gateway.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"disabled": True}).status_code == 200
    client, connack = await RawClient.connect(gateway.mqtt_port, token)
    assert connack.return_code == CONNACK_NOT_AUTHORIZED
    assert await client.closed_by_server()


async def test_wrong_protocol_level_gets_connack_1(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, level=3)
    assert connack.return_code == CONNACK_UNACCEPTABLE_PROTOCOL  # [MQTT-3.1.2-2]
    assert await client.closed_by_server()


async def test_zero_length_client_id_needs_clean_session(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="", clean=False)
    assert connack.return_code == CONNACK_IDENTIFIER_REJECTED  # [MQTT-3.1.3-8]
    assert await client.closed_by_server()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="", clean=True)
    assert connack.return_code == 0  # [MQTT-3.1.3-6]
    await client.close()


async def test_foreign_protocol_name_closes_without_connack(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client = await RawClient.open(gateway.mqtt_port)
    await client.send(Connect("x", True, 60, "Bearer", token.encode(), None, "hj", 4))
    with pytest.raises(ConnectionError):
        await client.recv()  # closed, no CONNACK [MQTT-3.1.2-1]


async def test_packet_before_connect_closes(gateway: Gateway) -> None:
    client = await RawClient.open(gateway.mqtt_port)
    await client.send(PingReq())
    assert await client.closed_by_server()  # [MQTT-3.1.0-1]


async def test_second_connect_closes(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    await client.send(Connect("again", True, 60, "Bearer", token.encode()))
    assert await client.closed_by_server()  # [MQTT-3.1.0-2]


async def test_malformed_packet_closes_only_that_connection(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    bystander, _ = await RawClient.connect(gateway.mqtt_port, token)
    await bystander.subscribe(("still/alive", 0))
    bad, _ = await RawClient.connect(gateway.mqtt_port, token)
    await bad.send_raw(b"\x30\x05\x00\x02a+xx")  # PUBLISH with a wildcard in its topic [MQTT-3.3.2-2]
    assert await bad.closed_by_server()
    qos3, _ = await RawClient.connect(gateway.mqtt_port, token)
    await qos3.send_raw(b"\x36\x05\x00\x01a\x00\x01")  # QoS 3 [MQTT-3.3.1-4]
    assert await qos3.closed_by_server()
    huge, _ = await RawClient.connect(gateway.mqtt_port, token)
    await huge.send_raw(b"\x30\xff\xff\xff\x7f")  # 256 MB announced: refused from the header
    assert await huge.closed_by_server()
    http_publish(gateway, token, "still/alive", "yes")
    [message] = await publishes(bystander, 1)
    assert message.payload == b"yes"
    assert any("protocol error" in line for line in gateway.log)
    await bystander.close()


async def test_token_expiry_closes_the_connection(gateway: Gateway) -> None:
    _, key = gateway.new_user()
    token = gateway.token(key, ttl=2)
    client, connack = await RawClient.connect(gateway.mqtt_port, token)
    assert connack.return_code == 0
    assert await client.closed_by_server(timeout=15)


# -- QoS flows ---------------------------------------------------------------------------------------


async def test_qos_flows_and_delivery_at_the_lower_qos(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    subs = {}
    for granted in (0, 1, 2):
        client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id=f"sub{granted}")
        suback = await client.subscribe(("sensors/temp", granted))
        assert suback.return_codes == (granted,)
        subs[granted] = client
    pub, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="pub")
    for qos in (0, 1, 2):
        await pub.publish("sensors/temp", f"q{qos}".encode(), qos)  # PUBACK / PUBREC only after the store
    for granted, client in subs.items():
        got = await publishes(client, 3)
        assert [m.payload for m in got] == [b"q0", b"q1", b"q2"]  # ordered topic [MQTT-4.6.0-5]
        assert [m.qos for m in got] == [min(q, granted) for q in (0, 1, 2)]  # [MQTT-3.8.4-6]
        assert all(not m.retain and not m.dup for m in got)  # [MQTT-3.3.1-9]
        assert all((m.packet_id is None) == (m.qos == 0) for m in got)
        await quiet(client, 0.2)
        await client.close()
    await pub.close()


async def test_qos2_resent_publish_is_stored_once(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    sub, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="s")
    await sub.subscribe(("once", 2))
    pub, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="p")
    await pub.send(Publish("once", b"exactly", 2, False, False, 7))
    assert (await pub.expect(PubRec)).packet_id == 7
    await pub.send(Publish("once", b"exactly", 2, False, True, 7))  # re-sent before PUBREL
    assert (await pub.expect(PubRec)).packet_id == 7  # [MQTT-4.3.3-2]
    await pub.send(PubRel(7))
    assert (await pub.expect(PubComp)).packet_id == 7
    await pub.send(Publish("once", b"second", 2, False, False, 7))  # the id is free again after PUBREL
    assert (await pub.expect(PubRec)).packet_id == 7
    await pub.send(PubRel(7))
    await pub.expect(PubComp)
    got = await publishes(sub, 2)
    assert [m.payload for m in got] == [b"exactly", b"second"]
    await quiet(sub)
    await sub.close()
    await pub.close()


async def test_unsubscribe_stops_delivery(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    await client.subscribe(("u/1", 0))
    await client.send(Unsubscribe(99, ("u/1", "never/subscribed")))
    assert (await client.expect(UnsubAck)).packet_id == 99  # [MQTT-3.10.4-4, 3.10.4-5]
    http_publish(gateway, token, "u/1", "gone")
    await client.nothing(1.0)
    await client.close()


# -- topics, wildcards, permissions -------------------------------------------------------------------


async def test_wildcards_and_dollar_topics(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    suback = await client.subscribe(("+/+", 0), ("a/#", 0), ("a/#/b", 0), ("", 0))
    assert suback.return_codes == (0, 0, 0x80, 0x80)  # invalid filters fail alone [MQTT-4.7.1-2, 4.7.3-1]
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    await pub.publish("$SYS/x", b"dollar", 1)  # not matched by '+/+' [MQTT-4.7.2-1]
    await pub.publish("a", b"parent", 1)  # 'a/#' matches 'a' [MQTT-4.7.1-2]
    await pub.publish("b/c", b"two-levels", 1)
    await pub.publish("a/b/c", b"deep", 1)
    got = await publishes(client, 3)
    assert sorted(m.payload for m in got) == [b"deep", b"parent", b"two-levels"]
    await client.nothing(0.5)
    dollar, _ = await RawClient.connect(gateway.mqtt_port, token)
    await dollar.subscribe(("$SYS/#", 0))
    await pub.publish("$SYS/x", b"explicit", 1)
    [m] = await publishes(dollar, 1)
    assert (m.topic, m.payload) == ("$SYS/x", b"explicit")
    for c in (client, pub, dollar):
        await c.close()


async def test_namespaces_are_isolated_and_client_ids_scoped(gateway: Gateway) -> None:
    alice_id, alice = gateway.user_token()
    _, bob = gateway.user_token()
    a, ack_a = await RawClient.connect(gateway.mqtt_port, alice, client_id="same-id")
    b, ack_b = await RawClient.connect(gateway.mqtt_port, bob, client_id="same-id")
    assert ack_a.return_code == ack_b.return_code == 0
    assert (await b.subscribe(("#", 0))).return_codes == (0,)
    # Bob cannot reach alice's topic even by its full name: it is a short name in his namespace.
    assert (await b.subscribe((f"{alice_id}_app_secret", 0))).return_codes == (0,)
    await a.publish("secret", b"for alice only", 1)
    await b.nothing(1.0)
    await a.send(PingReq())
    await a.expect(PingResp)  # both connections with client id 'same-id' stay up
    await a.close()
    await b.close()


async def test_forbidden_subscribe_gets_0x80_and_forbidden_publish_is_dropped(gateway: Gateway) -> None:
    user_id, key = gateway.new_user()
    permissions = {"publish": {"allow": ["open/#"]}, "subscribe": {"allow": ["open/#"], "deny": ["open/secret"]}}
    limited = gateway.token(key, permissions=permissions)
    full = gateway.token(key)
    client, _ = await RawClient.connect(gateway.mqtt_port, limited)
    suback = await client.subscribe(("open/x", 1), ("closed/x", 1), ("open/secret", 1))
    assert suback.return_codes == (1, 0x80, 0x80)  # [MQTT-3.9.3-1]
    pub, _ = await RawClient.connect(gateway.mqtt_port, limited)
    await pub.publish("closed/x", b"dropped", 1)  # acknowledged anyway, not stored
    await pub.publish("open/x", b"stored", 1)
    [m] = await publishes(client, 1)
    assert m.payload == b"stored"
    watcher, _ = await RawClient.connect(gateway.mqtt_port, full)
    await watcher.subscribe(("closed/x", 0))
    await pub.publish("closed/x", b"dropped again", 2)
    await watcher.nothing(1.0)
    await pub.close()
    metrics = (await asyncio.to_thread(httpx.get, gateway.base_url + "/metrics", timeout=10)).text
    assert 'flowgate_messages_rejected_total{protocol="mqtt",reason="forbidden"}' in metrics
    await client.close()
    await watcher.close()
    assert user_id


# -- sessions: takeover, keepalive, will --------------------------------------------------------------


async def test_takeover_closes_the_older_connection(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    first, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="device-7")
    second, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="device-7")
    assert connack.return_code == 0
    assert await first.closed_by_server()  # [MQTT-3.1.4-2]
    await second.send(PingReq())
    await second.expect(PingResp)
    await second.close()


async def test_keepalive_timeout_closes_and_sends_the_will(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    watcher, _ = await RawClient.connect(gateway.mqtt_port, token)
    await watcher.subscribe(("status/#", 1))
    will = Will("status/dev", b"offline", 1, False)
    silent, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="silent", keepalive=1, will=will)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await silent.closed_by_server(timeout=10)  # [MQTT-3.1.2-24]
    assert loop.time() - started >= 1.4  # not before 1.5 x keepalive
    [m] = await publishes(watcher, 1)
    assert (m.topic, m.payload, m.qos) == ("status/dev", b"offline", 1)  # [MQTT-3.1.2-8]
    await watcher.close()


async def test_will_on_abrupt_close_but_not_after_disconnect(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    watcher, _ = await RawClient.connect(gateway.mqtt_port, token)
    await watcher.subscribe(("wills/+", 0))
    polite, _ = await RawClient.connect(gateway.mqtt_port, token, will=Will("wills/polite", b"x", 0, False))
    from protocols.mqtt.packets import Disconnect

    await polite.send(Disconnect())
    await polite.close()
    rude, _ = await RawClient.connect(gateway.mqtt_port, token, will=Will("wills/rude", b"gone", 0, False))
    await rude.close()  # no DISCONNECT
    [m] = await publishes(watcher, 1)
    assert (m.topic, m.payload) == ("wills/rude", b"gone")  # [MQTT-3.1.2-8, 3.1.2-10]
    await watcher.nothing(1.0)
    await watcher.close()


# -- retained messages --------------------------------------------------------------------------------


async def test_retained_messages(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    await pub.publish("home/kitchen", b"21C", 1, retain=True)
    await pub.publish("home/hall", b"19C", 2, retain=True)
    await pub.publish("home/hall", b"18C", 0, retain=True)  # replaces [MQTT-3.3.1-5]
    sub, _ = await RawClient.connect(gateway.mqtt_port, token)
    await sub.subscribe(("home/+", 2))
    got = await publishes(sub, 2)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [("home/hall", b"18C", 0), ("home/kitchen", b"21C", 1)]
    assert all(m.retain for m in got)  # [MQTT-3.3.1-8]
    await quiet(sub, 0.2)
    await pub.publish("home/kitchen", b"22C", 1, retain=True)
    [live] = await publishes(sub, 1)
    assert (live.payload, live.retain) == (b"22C", False)  # established subscription [MQTT-3.3.1-9]
    await pub.publish("home/kitchen", b"", 0, retain=True)  # clears [MQTT-3.3.1-10, 3.3.1-11]
    [cleared] = await publishes(sub, 1)
    assert cleared.payload == b""
    late, _ = await RawClient.connect(gateway.mqtt_port, token)
    await late.subscribe(("home/#", 1))
    [m] = await publishes(late, 1)
    assert (m.topic, m.payload, m.retain) == ("home/hall", b"18C", True)
    await late.nothing(0.5)
    for c in (pub, sub, late):
        await c.close()


# -- cross-protocol --------------------------------------------------------------------------------------


async def test_mqtt_publish_reaches_sse(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    received: list[dict[str, Any]] = []
    ready = threading.Event()
    done = threading.Event()

    def read_sse() -> None:
        with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
            with http.stream("GET", "/api/v1/subscribe", params={"topic": "x/#", "token": token}) as stream:
                ready.set()
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        received.append(orjson.loads(line[6:]))
                        if len(received) == 3:
                            done.set()
                            return

    thread = threading.Thread(target=read_sse, daemon=True)
    thread.start()
    # The response starts only once the hub subscription is registered (protocols/http/sse.py opens the feed
    # before answering), so the headers are the event: no extra wait.
    assert await asyncio.to_thread(ready.wait, 20)
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    await pub.publish("x/json", b'{"t": 21.5}', 1)
    await pub.publish("x/text", "héllo".encode(), 1)
    await pub.publish("x/bin", b"\xff\x00\x01", 1)
    assert await asyncio.to_thread(done.wait, 20)
    by_topic = {r["topic"]: r for r in received}
    assert by_topic["x/json"]["data"] == {"t": 21.5}
    assert by_topic["x/text"]["data"] == "héllo"
    assert by_topic["x/bin"]["encoding"] == "base64"
    await pub.close()


def test_paho_client_qos1_round_trip(gateway: Gateway) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    _, token = gateway.user_token()
    got: list[Any] = []
    subscribed = threading.Event()
    arrived = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="paho-1", protocol=paho.MQTTv311)
    client.username_pw_set("Bearer", token)
    client.on_subscribe = lambda *a: subscribed.set()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        got.append(message)
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", gateway.mqtt_port, keepalive=30)
    client.loop_start()
    try:
        client.subscribe("paho/t", qos=1)
        assert subscribed.wait(10)
        info = client.publish("paho/t", b"from paho", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        assert arrived.wait(10)
        assert (got[0].topic, got[0].payload, got[0].qos) == ("paho/t", b"from paho", 1)
    finally:
        client.disconnect()
        client.loop_stop()


# -- scenarios of the usual interoperability suites, as a device runs them ------------------------------


async def test_overlapping_subscriptions_deliver_at_the_highest_qos(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="overlap")
    assert (await client.subscribe(("TopicA/#", 2), ("TopicA/+", 1))).return_codes == (2, 1)
    await client.publish("TopicA/C", b"overlapping topic filters", 2)
    got = await publishes(client, 1)
    try:
        got += await publishes(client, 1, timeout=1.0)
    except TimeoutError:
        pass
    # One copy at the maximum QoS [MQTT-3.3.5-1]: a clean session's QoS 2 subscription is on the hub's
    # stored tier and its QoS 1 one on the core tier; the copy goes out from the stored tier (Outbound._one_copy).
    assert [m.qos for m in got] == [2]
    await quiet(client, 0.3)
    await client.close()


async def test_overlapping_subscriptions_on_one_subject_get_one_copy_at_the_highest_qos(gateway: Gateway) -> None:
    """'TopicA' and 'TopicA/#' both match 'TopicA': one copy, at the higher QoS [MQTT-3.3.5-1]; the
    message on a third filter arriving after it says no second copy is coming."""
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="overlap-once")
    assert (await client.subscribe(("TopicA", 0), ("TopicA/#", 1), ("TopicB", 1))).return_codes == (0, 1, 1)
    await client.publish("TopicA", b"once", 1)
    await client.publish("TopicB", b"after", 1)
    got = await publishes(client, 2)
    assert [(m.topic, m.payload, m.qos) for m in got] == [("TopicA", b"once", 1), ("TopicB", b"after", 1)]
    await client.close()


async def test_retained_on_odd_topics_and_clearing_them(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    for topic, qos in (("TopicA/B", 0), ("Topic/C", 1), ("/TopicA", 2)):
        await client.publish(topic, f"qos {qos}".encode(), qos, retain=True)
    assert (await client.subscribe(("+/+", 2))).return_codes == (2,)
    got = await publishes(client, 3)
    assert sorted((m.topic, m.retain) for m in got) == [("/TopicA", True), ("Topic/C", True), ("TopicA/B", True)]
    await quiet(client, 0.3)
    await client.close()
    cleaner, _ = await RawClient.connect(gateway.mqtt_port, token)
    for topic in ("TopicA/B", "Topic/C", "/TopicA"):
        await cleaner.publish(topic, b"", 0, retain=True)
    # QoS 0 has no acknowledgement: a PINGRESP, answered after the packets before it, says the clears
    # were handled, so the late subscriber cannot subscribe before them and get one of them live.
    await cleaner.send(PingReq())
    await cleaner.expect(PingResp)
    await cleaner.close()
    late, _ = await RawClient.connect(gateway.mqtt_port, token)
    await late.subscribe(("+/+", 2))
    await late.nothing(1.0)  # nothing retained any more
    await late.send(PingReq())
    await late.expect(PingResp)
    await late.close()


async def test_redelivery_after_a_clean_disconnect(gateway: Gateway) -> None:
    """The client stops answering, disconnects cleanly and comes back: QoS 1 and 2 are re-sent [MQTT-4.4.0-1]."""
    from protocols.mqtt.packets import Disconnect

    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="myclientid", clean=False)
    await client.subscribe(("TopicA/#", 2))
    await client.send(Publish("TopicA/B", b"", 1, False, False, 1))
    await client.send(Publish("TopicA/C", b"", 2, False, False, 2))
    seen = 0
    while seen < 2:  # PUBACK, PUBREC and the two deliveries, none of which we answer
        packet = await client.recv()
        seen += isinstance(packet, Publish)
    await client.send(Disconnect())
    await client.close()
    client, connack = await RawClient.connect(gateway.mqtt_port, token, client_id="myclientid", clean=False)
    assert connack.session_present
    got = await publishes(client, 2, timeout=3)
    assert sorted((m.topic, m.qos, m.dup) for m in got) == [("TopicA/B", 1, True), ("TopicA/C", 2, True)]
    await quiet(client, 0.3)
    await client.send(Disconnect())
    await client.close()
    client, _ = await RawClient.connect(gateway.mqtt_port, token, client_id="myclientid", clean=True)
    await client.close()


async def test_a_subscriber_that_stops_reading_is_disconnected_alone(gateway: Gateway) -> None:
    """Its outbound queue is bounded: it is closed as a slow consumer; publisher and others go on."""
    _, token = gateway.user_token()
    stuck, _ = await RawClient.connect(gateway.mqtt_port, token, keepalive=0)
    await stuck.subscribe(("flood", 0))  # from here on, 'stuck' reads nothing until the end
    healthy, _ = await RawClient.connect(gateway.mqtt_port, token)
    await healthy.subscribe(("flood/end", 1))
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    chunk = b"z" * 16384
    for _ in range(4):
        pub.writer.write(b"".join(encode(Publish("flood", chunk)) for _ in range(1000)))
        await pub.writer.drain()
    await pub.publish("flood/end", b"done", 1)
    [m] = await publishes(healthy, 1, timeout=30)
    assert m.payload == b"done"
    assert await stuck.closed_by_server(timeout=30)
    metrics = (await asyncio.to_thread(httpx.get, gateway.base_url + "/metrics", timeout=10)).text
    assert 'flowgate_slow_consumers_closed_total{protocol="mqtt"}' in metrics
    for c in (healthy, pub):
        await c.close()


async def test_subscribing_again_replaces_the_subscription(gateway: Gateway) -> None:
    """Same filter again: the old subscription is replaced (new QoS), retained messages are re-sent [MQTT-3.8.4-3]."""
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    await client.publish("cfg/led", b"on", 1, retain=True)
    assert (await client.subscribe(("cfg/#", 0))).return_codes == (0,)
    [first] = await publishes(client, 1)
    assert (first.payload, first.qos, first.retain) == (b"on", 0, True)
    assert (await client.subscribe(("cfg/#", 1))).return_codes == (1,)
    [again] = await publishes(client, 1)
    assert (again.payload, again.qos, again.retain) == (b"on", 1, True)
    await client.publish("cfg/led", b"off", 1)
    [live] = await publishes(client, 1)
    assert (live.payload, live.qos, live.retain) == (b"off", 1, False)  # one copy, at the new QoS
    await quiet(client, 0.5)
    await client.close()


async def test_each_message_once_from_this_and_other_replicas_on_both_hub_tiers(
    make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]
) -> None:
    """QoS 0 and 1 subscriptions are served from the hub's core tier (local publishes handed over directly,
    other replicas' through core NATS), QoS 2 from the stored tier; either way each message arrives once,
    each publisher's messages of one QoS in order [MQTT-4.6.0-6], at min(publish, granted QoS) [MQTT-3.8.4-6]."""
    nats = make_nats()
    shared = {"secret_key": "s" * 40, "admin_key": "fga_test_" + "k" * 30}
    here, there = make_gateway(nats.url, **shared), make_gateway(nats.url, **shared)
    _, token = here.user_token()
    subs = {}
    for granted in (0, 1, 2):
        subs[granted], _ = await RawClient.connect(here.mqtt_port, token, client_id=f"sub-{granted}")
        assert (await subs[granted].subscribe(("plant/#", granted))).return_codes == (granted,)
    local, _ = await RawClient.connect(here.mqtt_port, token, client_id="local-pub")
    remote, _ = await RawClient.connect(there.mqtt_port, token, client_id="remote-pub")
    sources = [(local, b"local"), (remote, b"remote")]
    for n in range(5):
        for qos in (0, 1, 2):
            for client, name in sources:
                await client.publish(f"plant/{name.decode()}", b"%s-%d-%d" % (name, qos, n), qos)
    http_publish(there, token, "plant/http", "over http")  # counts as QoS 1
    expected = {b"%s-%d-%d" % (name, qos, n) for _, name in sources for qos in (0, 1, 2) for n in range(5)}
    expected.add(b"over http")
    for granted, client in subs.items():
        got = await publishes(client, len(expected))
        bodies = [m.payload for m in got]
        assert sorted(bodies) == sorted(expected)  # each once
        for _, name in sources:
            for qos in (0, 1, 2):
                prefix = b"%s-%d-" % (name, qos)
                assert [b for b in bodies if b.startswith(prefix)] == [prefix + b"%d" % n for n in range(5)]
                assert {m.qos for m in got if m.payload.startswith(prefix)} == {min(qos, granted)}
        await quiet(client, 0.5)
    for client in (*subs.values(), local, remote):
        await client.close()


async def test_switching_a_subscription_between_qos_levels_keeps_it_flowing(gateway: Gateway) -> None:
    """The same filter again at another QoS may move it between the hub's tiers: no gap [MQTT-3.8.4-3]."""
    _, token = gateway.user_token()
    client, _ = await RawClient.connect(gateway.mqtt_port, token)
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    for step, granted in enumerate((0, 1, 0, 2, 1, 2, 0)):
        assert (await client.subscribe(("dial", granted))).return_codes == (granted,)
        await pub.publish("dial", b"step-%d" % step, 2)
        [got] = await publishes(client, 1)
        assert (got.payload, got.qos) == (b"step-%d" % step, granted)
    await quiet(client, 0.5)
    await pub.publish("dial", b"last", 0)
    [got] = await publishes(client, 1)
    assert (got.payload, got.qos) == (b"last", 0)
    await client.close()
    await pub.close()


async def test_qos0_forwarded_as_received_only_to_subscribers_who_spell_the_topic_the_same_way(
    gateway: Gateway,
) -> None:
    """A QoS 0 PUBLISH goes on as received when the subscriber's copy would be the same bytes; a subscriber
    using the other spelling (short or full name) still gets its own [MQTT-3.3.2-3], at its own QoS."""
    user_id, token = gateway.user_token()
    full_prefix = f"{user_id}_app_"
    pub, _ = await RawClient.connect(gateway.mqtt_port, token)
    short_sub, _ = await RawClient.connect(gateway.mqtt_port, token)
    full_sub, _ = await RawClient.connect(gateway.mqtt_port, token)
    qos1_sub, _ = await RawClient.connect(gateway.mqtt_port, token)
    assert (await short_sub.subscribe(("fw/+", 0))).return_codes == (0,)
    assert (await full_sub.subscribe((full_prefix + "fw/+", 0))).return_codes == (0,)
    assert (await qos1_sub.subscribe(("fw/+", 1))).return_codes == (1,)
    await pub.publish("fw/short", b"s", 0)
    await pub.publish(full_prefix + "fw/full", b"f", 0)
    for client, spell in ((short_sub, ""), (full_sub, full_prefix), (qos1_sub, "")):
        got = await publishes(client, 2)
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            (spell + "fw/short", b"s", 0),
            (spell + "fw/full", b"f", 0),
        ]
        await quiet(client, 0.3)
    for client in (pub, short_sub, full_sub, qos1_sub):
        await client.close()


async def test_a_long_burst_then_disconnect_and_close_is_handled_to_the_end(gateway: Gateway) -> None:
    """The gateway handles a read in slices; a client that writes 2,000 publishes and DISCONNECT in one go
    and closes at once still has every publish delivered, and its DISCONNECT discards the will
    [MQTT-3.1.2-10]: what the socket had received is handled before the connection is cleaned up."""
    _, token = gateway.user_token()
    watcher, _ = await RawClient.connect(gateway.mqtt_port, token)
    await watcher.subscribe(("burst/#", 0))
    will = Will("burst/will", b"gone", 0, False)
    device, _ = await RawClient.connect(gateway.mqtt_port, token, will=will)
    frames = b"".join(encode(Publish("burst/t", b"%d" % i, 0)) for i in range(2000))
    device.writer.write(frames + encode(Disconnect()))
    await device.close()
    got = await publishes(watcher, 2000, timeout=20)
    assert [m.payload for m in got] == [b"%d" % i for i in range(2000)]  # all, in order, no will among them
    await watcher.nothing(0.5)
    await watcher.close()
