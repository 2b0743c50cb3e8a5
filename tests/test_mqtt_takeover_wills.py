"""MQTT 5 wills when a session moves to another replica (protocols/mqtt/context.py; the takeover announcement
and its ``Fg-Resuming`` header in gateway/bus/mqtt_store.py).

A will waiting for its Will Delay Interval, or the will of a connection the takeover closes, is not
published when the session is resumed within the delay [MQTT-3.1.3-9], and goes out at once when the new
connection starts clean: the old session ended, "after the Will Delay Interval or when the Session ends,
whichever happens first" [3.1.3.2.2]. Two replicas on a nats-server of their own, paho-mqtt v5 clients.
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.bus.mqtt_store import TAKEOVER_SUBJECT, session_names
from gateway.topics import Namespace
from tests.harness import Gateway, replicas_on_own_nats
from tests.waiting import poll_sync

pytestmark = pytest.mark.timeout(90)
SHORT_DELAY = 3  # seconds: long enough to reconnect within, short enough to wait past
LONG_DELAY = 30
SESSION_EXPIRY = 300
TAKEN_OVER = 0x8E


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Gateway]]:
    with replicas_on_own_nats("fg-wills-", {}) as gateways:
        yield gateways


class Device:
    """A paho-mqtt v5 client driven by hand (``loop``), so nothing reconnects it behind the test's back."""

    def __init__(self, gw: Gateway, token: str, client_id: str, *, clean: bool, will: tuple[str, int] | None) -> None:
        self.client_id = client_id
        self.session_present: bool | None = None
        self.subscribed = False
        self.disconnect_reason: int | None = None
        client = self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        client.username_pw_set("Bearer", token)
        if will is not None:
            topic, delay = will
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = delay
            client.will_set(topic, b"gone", qos=0, properties=will_props)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        client.connect("127.0.0.1", gw.mqtt_port, keepalive=60, clean_start=clean, properties=props)
        self.pump(lambda: self.session_present is not None, "CONNACK")
        # The session (its record and durable consumer) exists from CONNACK on; once SUBACK is here, the
        # subscription is stored with it and a takeover finds the whole session [MQTT-3.2.2-2].
        client.subscribe("cmd/" + client_id, qos=1)
        self.pump(lambda: self.subscribed, "SUBACK")

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        assert reason == 0, reason
        self.session_present = bool(flags.session_present)

    def _on_subscribe(self, *_a: Any) -> None:
        self.subscribed = True

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.disconnect_reason = int(reason.value)

    def pump(self, done: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{self.client_id}: no {what} within {timeout:g} s"
            self.client.loop(0.05)

    def drop(self) -> None:
        """Close the TCP connection without DISCONNECT (the will stays)."""
        sock = self.client.socket()
        assert sock is not None
        sock.close()

    def taken_over(self) -> None:
        """Wait for the server's DISCONNECT 0x8E [MQTT-3.1.4-3]."""
        self.pump(lambda: self.disconnect_reason is not None, "DISCONNECT")
        assert self.disconnect_reason == TAKEN_OVER

    def disconnect(self) -> None:
        self.client.disconnect()  # DISCONNECT 0x00: no will


class Watcher:
    """A paho-mqtt v5 client on every will of its user (``wills/#``)."""

    def __init__(self, gw: Gateway, token: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        client = self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="watch-" + secrets.token_hex(4), protocol=paho.MQTTv5
        )
        client.username_pw_set("Bearer", token)
        client.on_connect = lambda c, *_a: c.subscribe("wills/#", qos=0)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        client.connect("127.0.0.1", gw.mqtt_port, keepalive=60, clean_start=True)
        client.loop_start()
        assert subscribed.wait(10)

    def next(self, timeout: float) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def closed_there(gw: Gateway, user_id: str, client_id: str) -> None:
    """Wait until ``gw`` logged the connection of ``client_id`` closed by the network: its will is decided."""
    tags = (f" client_id={client_id} ", f" user={user_id}", "closed: connection lost")
    poll_sync(
        lambda: [line for line in list(gw.log) if all(tag in line for tag in tags)],
        bool,
        what=f"{client_id}'s connection closed on the gateway",
        timeout=10,
    )


# where the session goes (the other replica, or the same), and whether the old connection's will was
# already waiting (its network connection dropped and seen to) or the takeover closes it
PLACES = [
    pytest.param("other", "waiting", id="other-replica-will-waiting"),
    pytest.param("other", "open", id="other-replica-connection-open"),
    pytest.param("same", "waiting", id="same-replica-will-waiting"),
]


def take_session(
    replicas: list[Gateway], where: str, old: str, *, resume: bool, delay: int
) -> tuple[str, Watcher, Device, float]:
    """Device "dev" on the first replica with a will of ``delay`` s, then a second connection for its session
    on ``where`` (resuming it or starting clean), the first one's will already ``old`` "waiting" or the
    connection still "open" until the takeover closes it. Returns the user's token, a watcher of the wills,
    the second device, and when the first one left (``time.monotonic``)."""
    home = replicas[0]
    there = replicas[1] if where == "other" else home
    user_id, token = home.user_token()
    watcher = Watcher(replicas[1], token)
    first = Device(home, token, "dev", clean=True, will=("wills/dev", delay))
    left = time.monotonic()
    if old == "waiting":
        first.drop()
        closed_there(home, user_id, "dev")
    second = Device(there, token, "dev", clean=not resume, will=None)
    assert second.session_present == resume
    if old == "open":
        first.taken_over()
    return token, watcher, second, left


@pytest.mark.parametrize(("where", "old"), PLACES)
def test_a_session_resumed_within_the_will_delay_sends_no_will(replicas: list[Gateway], where: str, old: str) -> None:
    home = replicas[0]
    token, watcher, second, left = take_session(replicas, where, old, resume=True, delay=SHORT_DELAY)
    assert time.monotonic() - left < SHORT_DELAY, "resumed too late for the test to say anything"
    # A will with the same delay, due after the first's would have been: it arrives, and nothing before it.
    control = Device(home, token, "control", clean=True, will=("wills/control", SHORT_DELAY))
    control.drop()
    assert watcher.next(SHORT_DELAY + 10) == ("wills/control", b"gone")
    second.disconnect()
    watcher.close()


@pytest.mark.parametrize(("where", "old"), PLACES)
def test_a_session_started_clean_within_the_will_delay_sends_the_will_at_once(
    replicas: list[Gateway], where: str, old: str
) -> None:
    _, watcher, second, left = take_session(replicas, where, old, resume=False, delay=LONG_DELAY)
    assert watcher.next(10) == ("wills/dev", b"gone")
    assert time.monotonic() - left < LONG_DELAY / 2  # at once, not after the delay
    second.disconnect()
    watcher.close()


def test_a_takeover_announced_without_the_resuming_flag_leaves_the_delay_running(replicas: list[Gateway]) -> None:
    """A replica from before the flag announces ``[key, owner]`` alone: whether the session was resumed
    is unknown, so a will waiting here keeps its delay, as it did before the flag (neither dropped nor sent
    at once)."""
    home = replicas[0]
    user_id, token = home.user_token()
    watcher = Watcher(home, token)
    first = Device(home, token, "dev", clean=True, will=("wills/dev", SHORT_DELAY))
    first.drop()
    closed_there(home, user_id, "dev")
    left = time.monotonic()
    key, _ = session_names(Namespace(user_id, "app"), "dev")

    async def announce() -> None:
        assert home.nats_url is not None
        nc = await nats.connect(home.nats_url)
        await nc.publish(TAKEOVER_SUBJECT, orjson.dumps([key, "a-connection-on-an-older-replica"]))
        await nc.flush()
        await nc.close()

    asyncio.run(announce())
    assert watcher.next(SHORT_DELAY + 10) == ("wills/dev", b"gone")
    assert time.monotonic() - left > SHORT_DELAY - 1  # after its delay, not at once
    watcher.close()
