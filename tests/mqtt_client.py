"""A tiny MQTT 3.1.1 test client on our codec, for exact protocol tests (bytes and packets in order)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from protocols.mqtt.codec import Decoder, MQTTProtocolError, encode
from protocols.mqtt.packets import ConnAck, Connect, Packet, PubComp, Publish, PubRel, SubAck, Subscribe, Will

P = TypeVar("P")


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(64 * 1024 * 1024, server_side=False)
        self._ids = 0
        self.stash: list[Packet] = []  # packets that arrived while ``publish`` waited for its acknowledgement

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def connect(
        cls,
        port: int,
        token: str | None,
        *,
        client_id: str = "",
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        username: str | None = "Bearer",
        level: int = 4,
    ) -> tuple[RawClient, ConnAck]:
        client = await cls.open(port)
        password = token.encode() if token is not None else None
        await client.send(
            Connect(client_id, clean, keepalive, username, password, will, "MQTT" if level == 4 else "MQIsdp", level)
        )
        connack = await client.expect(ConnAck)
        return client, connack

    def next_id(self) -> int:
        self._ids = self._ids % 65535 + 1
        return self._ids

    async def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 10) -> Packet:
        """The next packet; raises ``ConnectionError`` on EOF, ``TimeoutError`` if none comes."""
        if self.stash:
            return self.stash.pop(0)
        async with asyncio.timeout(timeout):
            while True:
                packet = self.decoder.next_packet()
                if packet is not None:
                    return packet
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                self.decoder.feed(data)

    async def expect(self, kind: type[P], timeout: float = 10) -> P:
        packet = await self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    async def nothing(self, within: float = 0.5) -> None:
        """Assert no packet arrives within ``within`` seconds."""
        try:
            packet = await self.recv(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {packet!r}")

    async def closed_by_server(self, timeout: float = 10) -> bool:
        """Whether the server closes the connection within ``timeout`` (packets before that are skipped)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await self.recv(timeout)
                    except (ConnectionError, MQTTProtocolError):
                        return True
        except TimeoutError:
            return False

    async def subscribe(self, *topics: tuple[str, int]) -> SubAck:
        packet_id = self.next_id()
        await self.send(Subscribe(packet_id, tuple(topics)))
        while True:
            packet = await self.recv()
            if isinstance(packet, SubAck):
                assert packet.packet_id == packet_id
                return packet

    async def _ack(self, kind: type[P], packet_id: int | None) -> P:
        """Wait for ``kind`` with ``packet_id``; other packets (e.g. our own message coming back) are stashed."""
        skipped: list[Packet] = []
        try:
            while True:
                packet = await self.recv()
                if isinstance(packet, kind) and getattr(packet, "packet_id", None) == packet_id:
                    return packet
                skipped.append(packet)
        finally:
            self.stash[:0] = skipped

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        """Publish and complete the QoS flow; returns the packet id."""
        from protocols.mqtt.packets import PubAck, PubComp, PubRec

        packet_id = self.next_id() if qos else None
        await self.send(Publish(topic, payload, qos, retain, False, packet_id))
        if qos == 1:
            await self._ack(PubAck, packet_id)
        elif qos == 2:
            await self._ack(PubRec, packet_id)
            assert packet_id is not None
            await self.send(PubRel(packet_id))
            await self._ack(PubComp, packet_id)
        return packet_id

    async def acknowledge(self, packet: Packet) -> None:
        """Play the receiver's part of a QoS flow: PUBACK or PUBREC for a PUBLISH, PUBCOMP for a PUBREL."""
        from protocols.mqtt.packets import PubAck, PubRec

        if isinstance(packet, Publish) and packet.qos and packet.packet_id is not None:
            await self.send(PubAck(packet.packet_id) if packet.qos == 1 else PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            await self.send(PubComp(packet.packet_id))

    async def next_publish(self, timeout: float = 10) -> Publish:
        """The next PUBLISH, acknowledged; packets of other kinds before it are passed over."""
        while True:
            packet = await self.recv(timeout)
            if isinstance(packet, Publish):
                await self.acknowledge(packet)
                return packet

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def quiet(client: RawClient, within: float = 0.5) -> None:
    """No further PUBLISH within ``within`` seconds (pending PUBRELs are completed)."""
    while True:
        try:
            packet = await client.recv(within)
        except TimeoutError:
            return
        assert isinstance(packet, PubRel), f"unexpected {packet!r}"
        await client.send(PubComp(packet.packet_id))
