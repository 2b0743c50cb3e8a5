"""MQTT 5.0 behaviour exercised by the Eclipse Paho interoperability suite (client_test5.py) that the other
MQTT 5 tests did not pin down yet, written from the OASIS normative statements cited per test.

The suite drives the broker the way simple devices do: it resumes a session with Clean Start 0 and no
Session Expiry Interval, and changes a session's expiry on DISCONNECT. Each test here does the same with
our own client, in one user's namespace (short topic names, user name ``Bearer``, password = JWT).
"""

from __future__ import annotations

import asyncio

import nats
import nats.js.errors
import pytest

from gateway.bus.core import MESSAGES_STREAM
from gateway.bus.mqtt_store import session_names
from gateway.settings import Settings
from gateway.topics import Namespace
from protocols.mqtt.packets import Disconnect, SubAck, Subscribe
from protocols.mqtt.properties import Properties
from tests.harness import Gateway
from tests.mqtt5_client import Raw5

pytestmark = pytest.mark.timeout(60)


async def stored_session(gateway: Gateway, token: str, client_id: str, topic_filter: str, expiry: int) -> None:
    """Leave a stored session: Clean Start 1 with Session Expiry Interval ``expiry``, one QoS 2
    subscription, a normal DISCONNECT."""
    props = Properties(session_expiry_interval=expiry)
    client, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id=client_id, clean=True, properties=props)
    await client.send(Subscribe(1, ((topic_filter, 2),)))
    await client.expect(SubAck)
    await client.send(Disconnect())
    assert await client.closed_by_server()


async def subscribe_each(client: Raw5, *subscriptions: tuple[str, int, tuple[int, ...]]) -> None:
    """One SUBSCRIBE per (filter, QoS, Subscription Identifiers), each answered before the next."""
    for packet_id, (topic_filter, qos, ids) in enumerate(subscriptions, 1):
        await client.send(Subscribe(packet_id, ((topic_filter, qos),), Properties(subscription_identifiers=ids)))
        await client.expect(SubAck)


async def test_clean_start_0_without_session_expiry_resumes_the_stored_session(gateway: Gateway) -> None:
    """Paho's offline message queueing: the session is made with Session Expiry Interval > 0, then resumed
    with Clean Start 0 and no Session Expiry Interval.

    Clean Start 0 with a session for the client id: the server MUST resume it [MQTT-3.1.2-5], so Session
    Present is 1 [MQTT-3.2.2-3] and the messages queued for its subscriptions while it was away are sent
    [MQTT-3.1.2-23, 4.4.0-1]. An absent interval means the session ends when that connection closes
    [3.1.2.11.2]: the next Clean Start 0 finds none.
    """
    _, token = gateway.user_token()
    await stored_session(gateway, token, "resume0", "offline/+", 99999)
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await pub.publish5("offline/q1", b"qos 1", 1)
    await pub.publish5("offline/q2", b"qos 2", 2)
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="resume0", clean=False)
    assert connack.session_present
    got = {(await sub.next_publish()).payload for _ in range(2)}
    assert got == {b"qos 1", b"qos 2"}
    await sub.send(Disconnect())
    assert await sub.closed_by_server()
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="resume0", clean=False)
    assert not connack.session_present
    await sub.close()
    await pub.close()


async def test_disconnect_session_expiry_interval_replaces_the_connects(gateway: Gateway) -> None:
    """Paho's session expiry: CONNECT with Session Expiry Interval 1, DISCONNECT with 5; 3 s later the
    session is still there.

    The DISCONNECT's Session Expiry Interval is the one the session keeps (the CONNECT's is used only when
    it is absent) [3.14.2.2.2]; the server stores the session for that long after the close
    [MQTT-3.1.2-23], so Clean Start 0 within it resumes it (Session Present 1 [MQTT-3.2.2-3]).
    """
    _, token = gateway.user_token()
    short = Properties(session_expiry_interval=1)
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token, client_id="longer", clean=True, properties=short)
    await sub.send(Subscribe(1, (("longer/t", 1),)))
    await sub.expect(SubAck)
    await sub.send(Disconnect(0, Properties(session_expiry_interval=5)))
    assert await sub.closed_by_server()
    await asyncio.sleep(2.5)  # the condition under test is time passing: past the CONNECT's 1 s
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="longer", clean=False, properties=short)
    assert connack.session_present
    await sub.send(Disconnect(0, Properties(session_expiry_interval=0)))
    assert await sub.closed_by_server()


async def test_a_resumed_session_keeps_the_new_connects_session_expiry_interval(gateway: Gateway) -> None:
    """The same rule at CONNECT: a session made with Session Expiry Interval 1 and resumed with 5 is stored
    for 5 s after that connection closes [MQTT-3.1.2-23, 3.1.2.11.2]."""
    _, token = gateway.user_token()
    short, longer = Properties(session_expiry_interval=1), Properties(session_expiry_interval=5)
    await stored_session(gateway, token, "relonger", "relonger/t", 1)
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="relonger", clean=False, properties=longer)
    assert connack.session_present
    await sub.send(Disconnect())
    assert await sub.closed_by_server()
    await asyncio.sleep(2.5)  # the condition under test is time passing: past the first CONNECT's 1 s
    sub, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="relonger", clean=False, properties=short)
    assert connack.session_present
    await sub.send(Disconnect(0, Properties(session_expiry_interval=0)))
    assert await sub.closed_by_server()


async def test_overlapping_subscriptions_get_one_copy_with_every_subscription_identifier(gateway: Gateway) -> None:
    """Paho's subscribe identifiers test: two overlapping subscriptions with identifiers 2 and 3, one
    PUBLISH carrying both [MQTT-3.3.4-2, 3.3.4-4], at the higher QoS [MQTT-3.3.4-3 / 3.3.5-1]; a clean
    session's live deliveries as a persistent session's. A later message on a third filter arriving
    says no second copy is coming (deliveries to one client keep their order)."""
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await subscribe_each(sub, ("ids/t", 1, (2,)), ("ids/t/#", 0, (3,)), ("ids/end", 1, ()))
    await sub.publish5("ids/t", b"both", 1)
    await sub.publish5("ids/end", b"end", 1)
    got = [await sub.next_publish(), await sub.next_publish()]
    assert [(p.topic, p.payload) for p in got] == [("ids/t", b"both"), ("ids/end", b"end")]
    assert sorted(got[0].properties.subscription_identifiers) == [2, 3]
    assert got[0].qos == 1
    await sub.close()


async def test_overlapping_subscriptions_on_both_hub_tiers_get_one_copy_from_the_stored_tier(gateway: Gateway) -> None:
    """A QoS 2 subscription (the hub's stored tier) and an overlapping QoS 1 one (the core tier): the message
    goes out once, from the stored tier, at QoS 2 with both identifiers. The core tier hands a message over
    first (as it is stored), so a second copy would come before the next message's."""
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await subscribe_each(sub, ("tiers/t", 2, (6,)), ("tiers/#", 1, (7,)))
    await sub.publish5("tiers/t", b"first", 1)
    await sub.publish5("tiers/t", b"second", 1)
    got = [await sub.next_publish(), await sub.next_publish()]
    assert [(p.payload, p.qos, sorted(p.properties.subscription_identifiers)) for p in got] == [
        (b"first", 1, [6, 7]),
        (b"second", 1, [6, 7]),
    ]
    await sub.close()


async def test_overlapping_filters_on_different_bus_subjects_get_one_copy_each_with_its_identifier(
    gateway: Gateway,
) -> None:
    """'ids/+' and 'ids/#' reach the hub on two bus subjects: a message from another replica comes once
    on each, so the client may get a copy per subscription; the gateway does the same for a message
    published here, and each copy carries the identifier of its own subscription [MQTT-3.3.4-5]."""
    _, token = gateway.user_token()
    sub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await subscribe_each(sub, ("ids/+", 1, (4,)), ("ids/#", 1, (5,)), ("end", 1, ()))
    await sub.publish5("ids/u", b"each", 1)
    await sub.publish5("end", b"end", 1)
    got = [await sub.next_publish() for _ in range(3)]
    assert got[-1].payload == b"end"
    assert all(p.payload == b"each" for p in got[:2])
    assert sorted(p.properties.subscription_identifiers for p in got[:2]) == [(4,), (5,)]
    await sub.close()


async def test_a_session_resumed_with_expiry_0_and_taken_over_lives_on(gateway: Gateway) -> None:
    """A session resumed with no Session Expiry Interval ends when its connection closes, but not when a
    new connection of the same client takes it over with Clean Start 0: the old connection gets DISCONNECT
    0x8E [MQTT-3.1.4-3] and the session goes on with the new one (Session Present 1 [MQTT-3.2.2-3], its
    subscriptions still deliver)."""
    _, token = gateway.user_token()
    keep = Properties(session_expiry_interval=60)
    await stored_session(gateway, token, "handover", "handover/t", 60)
    old, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="handover", clean=False)
    assert connack.session_present
    new, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="handover", clean=False, properties=keep)
    assert connack.session_present
    assert (await old.expect(Disconnect)).reason_code == 0x8E
    pub, _ = await Raw5.connect5(gateway.mqtt_port, token)
    await pub.publish5("handover/t", b"still subscribed", 1)
    assert (await new.next_publish()).payload == b"still subscribed"
    await new.send(Disconnect(0, Properties(session_expiry_interval=0)))
    assert await new.closed_by_server()
    await pub.close()


async def test_a_session_expires_its_interval_after_the_close_and_not_later(gateway: Gateway) -> None:
    """Paho's session expiry: a session resumed and closed again with Session Expiry Interval 5 is gone
    6 s later.

    The server keeps the session state for the interval after the Network Connection closes, and only
    that long [MQTT-3.1.2-23]: a Clean Start 0 after it finds none, Session Present 0 [MQTT-3.2.2-3].
    Judged by the interval itself, not by when nats-server next removes the session's durable consumer
    (its inactive threshold counts from the consumer's last pull request). Within it, the session is
    there (Session Present 1).
    """
    _, token = gateway.user_token()
    expiry = Properties(session_expiry_interval=2)
    await stored_session(gateway, token, "expires", "expires/t", 2)
    for _ in range(3):
        client, connack = await Raw5.connect5(
            gateway.mqtt_port, token, client_id="expires", clean=False, properties=expiry
        )
        assert connack.session_present  # within the interval: resumed
        await client.send(Disconnect())
        assert await client.closed_by_server()
    await asyncio.sleep(2.5)  # the interval itself is what is tested: past it, from the last close
    client, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="expires", clean=False, properties=expiry)
    assert not connack.session_present
    await client.close()


async def test_a_session_ending_with_its_connection_is_still_collected_if_the_gateway_dies(gateway: Gateway) -> None:
    """Clean Start 0 without a Session Expiry Interval: the session ends when the connection closes
    [3.1.2.11.2], and the gateway deletes it then. Its durable consumer still has the configured expiry as
    inactive threshold, so one left behind by a gateway process that died before the close goes too."""
    user_id, token = gateway.user_token()
    client, connack = await Raw5.connect5(gateway.mqtt_port, token, client_id="ends-with-it", clean=False)
    assert not connack.session_present
    _, consumer = session_names(Namespace(user_id, "app"), "ends-with-it")
    assert gateway.nats_url is not None
    nc = await nats.connect(gateway.nats_url)
    try:
        info = await nc.jetstream().consumer_info(MESSAGES_STREAM, consumer)
        assert info.config.inactive_threshold == Settings.from_env({}).mqtt_session_expiry
        await client.send(Disconnect())
        assert await client.closed_by_server()
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().consumer_info(MESSAGES_STREAM, consumer)
    finally:
        await nc.close()
