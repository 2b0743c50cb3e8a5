"""MQTT over WebSocket at ``/mqtt`` (binary frames, subprotocol ``mqtt``) through the real gateway."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from protocols.mqtt.codec import Decoder, encode
from protocols.mqtt.packets import ConnAck, Connect, PubAck, Publish, SubAck, Subscribe
from tests.harness import Gateway
from tests.mqtt_client import RawClient

pytestmark = pytest.mark.timeout(60)


async def test_packets_may_span_frames_and_reach_tcp_clients(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    tcp, _ = await RawClient.connect(gateway.mqtt_port, token)
    await tcp.subscribe(("web/out", 1))
    async with ws_connect(gateway.ws_url + "/mqtt", subprotocols=[Subprotocol("mqtt")]) as ws:
        assert ws.subprotocol == "mqtt"  # [MQTT-6.0.0-4]
        connect = encode(Connect("browser-1", True, 30, "Bearer", token.encode()))
        await ws.send(connect[:5])  # one packet over two frames [MQTT-6.0.0-2]
        await ws.send(connect[5:])
        decoder = Decoder(1 << 20, server_side=False)

        async def next_packet() -> Any:
            while (packet := decoder.next_packet()) is None:
                frame = await ws.recv()
                assert isinstance(frame, bytes)  # binary frames only [MQTT-6.0.0-1]
                decoder.feed(frame)
            return packet

        assert await next_packet() == ConnAck(False, 0)
        # two packets in one frame
        await ws.send(encode(Subscribe(1, (("web/in", 1),))) + encode(Publish("web/out", b"hi tcp", 1, packet_id=2)))
        got = {type(p) for p in (await next_packet(), await next_packet())}
        assert got == {SubAck, PubAck}
        message = await tcp.recv()
        assert isinstance(message, Publish) and (message.topic, message.payload) == ("web/out", b"hi tcp")
        assert message.packet_id is not None
        await tcp.send(PubAck(message.packet_id))
        await tcp.publish("web/in", b"hi browser", 1)
        delivered = await next_packet()
        assert isinstance(delivered, Publish) and delivered.payload == b"hi browser"
    await tcp.close()


async def test_upgrade_without_the_mqtt_subprotocol_is_refused(gateway: Gateway) -> None:
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with ws_connect(gateway.ws_url + "/mqtt") as ws:
            await ws.recv()


async def test_text_frame_closes(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with ws_connect(gateway.ws_url + "/mqtt", subprotocols=[Subprotocol("mqtt")]) as ws:
        await ws.send(encode(Connect("t", True, 30, "Bearer", token.encode())))
        await ws.recv()
        await ws.send("not binary")
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await ws.recv()


def test_paho_over_websocket(gateway: Gateway) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    _, token = gateway.user_token()
    arrived = threading.Event()
    subscribed = threading.Event()
    got: list[Any] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="ws-paho", transport="websockets")
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
        client.subscribe("ws/#", qos=2)
        assert subscribed.wait(10)
        client.publish("ws/echo", b"over websocket", qos=2).wait_for_publish(10)
        assert arrived.wait(10)
        assert (got[0].topic, got[0].payload, got[0].qos) == ("ws/echo", b"over websocket", 2)
    finally:
        client.disconnect()
        client.loop_stop()
