"""The MQTT 5 flavour of the tiny test client (``tests/mqtt_client.py``): our v5 codec, exact packets in order."""

from __future__ import annotations

import asyncio

from protocols.mqtt.codec5 import ClientDecoder, encode5
from protocols.mqtt.packets import ConnAck, Connect, Packet, PubAck, PubComp, Publish, PubRec, PubRel, Will
from protocols.mqtt.properties import NO_PROPERTIES, Properties
from tests.mqtt_client import RawClient


class Raw5(RawClient):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.decoder = ClientDecoder()

    @classmethod
    async def connect5(
        cls,
        port: int,
        token: str | None,
        *,
        client_id: str = "",
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        properties: Properties = NO_PROPERTIES,
        username: str | None = "Bearer",
    ) -> tuple[Raw5, ConnAck]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        password = token.encode() if token is not None else None
        await client.send(Connect(client_id, clean, keepalive, username, password, will, "MQTT", 5, properties))
        return client, await client.expect(ConnAck)

    async def send(self, packet: Packet) -> None:
        self.writer.write(encode5(packet))
        await self.writer.drain()

    async def publish5(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties: Properties = NO_PROPERTIES
    ) -> Packet | None:
        """Publish; returns the PUBACK, or the PUBREC (a refused QoS 2 flow ends there), or the PUBCOMP."""
        packet_id = self.next_id() if qos else None
        await self.send(Publish(topic, payload, qos, retain, False, packet_id, None, properties))
        if qos == 1:
            return await self._ack(PubAck, packet_id)
        if qos == 2:
            rec = await self._ack(PubRec, packet_id)
            if rec.reason_code >= 0x80:
                return rec
            assert packet_id is not None
            await self.send(PubRel(packet_id))
            return await self._ack(PubComp, packet_id)
        return None
