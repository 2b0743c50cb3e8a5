"""A client still sending when the gateway closes gets the closing packet, then EOF, not a reset (linger.py).

Raw blocking sockets: the client writes without reading, so that its bytes are
still arriving when the gateway decides to close; only then does it read. A
close with those bytes unread would make the kernel send a RST, and the client
would lose the DISCONNECT (or the refusing CONNACK) already sent. Each case
runs a few rounds, the failure being a matter of timing. Then ``LingeringWire``
itself, on a recording transport.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from protocols.mqtt import linger
from protocols.mqtt.codec import Decoder, encode
from protocols.mqtt.codec5 import ClientDecoder, encode5
from protocols.mqtt.linger import Lingering, LingeringWire
from protocols.mqtt.packets import ConnAck, Connect, Disconnect, Packet, Publish, PubRec
from tests.harness import Gateway, NatsServer, free_port, temp_dir
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.timeout(120)

ROUNDS = 5
SENDING = 0.3  # seconds the client goes on writing before it reads


class _Client:
    """A blocking socket with a decoder; every packet until the server's EOF."""

    def __init__(self, port: int, decoder: Decoder | ClientDecoder, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls is not None else sock
        self.decoder = decoder

    def next_packet(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = self.sock.recv(65536)
            assert data, "closed by the server"
            self.decoder.feed(data)
        return packet

    def keep_sending(self, data: bytes, seconds: float) -> None:
        """Write ``data`` again and again for ``seconds``, reading nothing (a RST fails here or at the read)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.sendall(data)

    def until_eof(self) -> list[Packet]:
        packets: list[Packet] = []
        while True:
            while (packet := self.decoder.next_packet()) is not None:
                packets.append(packet)
            data = self.sock.recv(65536)
            if not data:
                return packets
            self.decoder.feed(data)

    def close(self) -> None:
        self.sock.close()


def _v5_client(gateway: Gateway) -> tuple[_Client, ConnAck]:
    _, key = gateway.new_user(plan="pro")  # a publish rate the bursts below stay within
    client = _Client(gateway.mqtt_port, ClientDecoder())
    client.sock.sendall(encode5(Connect("", True, 60, "Bearer", gateway.token(key).encode(), None, "MQTT", 5)))
    connack = client.next_packet()
    assert isinstance(connack, ConnAck) and connack.return_code == 0
    return client, connack


def _receive_maximum_exceeded(client: _Client, connack: ConnAck) -> int:
    limit = connack.properties.receive_maximum
    assert limit is not None
    # QoS 2 publishes stay unacknowledged until PUBREL: one more than the Receive Maximum is 0x93 [MQTT-3.3.4-8]
    client.sock.sendall(b"".join(encode5(Publish("linger/t", b"x", 2, packet_id=i + 1)) for i in range(limit + 1)))
    client.keep_sending(encode5(Publish("linger/t", b"y" * 1024, 1, packet_id=1)), SENDING)
    return 0x93


def _packet_too_large(client: _Client, connack: ConnAck) -> int:
    maximum = connack.properties.maximum_packet_size
    assert maximum is not None
    remaining = maximum + 1  # over the maximum [MQTT-3.2.2-15], refused from the fixed header: 0x95
    header = bytearray([0x30])
    while True:
        byte, remaining = remaining % 128, remaining // 128
        header.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    client.sock.sendall(bytes(header) + b"\x00\x08linger/t")
    client.keep_sending(b"z" * 65536, SENDING)  # the payload, which the gateway never reads
    return 0x95


@pytest.mark.parametrize("cause", [_receive_maximum_exceeded, _packet_too_large])
def test_a_v5_client_still_sending_reads_the_disconnect_then_eof(
    gateway: Gateway, cause: Callable[[_Client, ConnAck], int]
) -> None:
    for _ in range(ROUNDS):
        client, connack = _v5_client(gateway)
        try:
            code = cause(client, connack)
            packets = client.until_eof()  # no ConnectionResetError
        finally:
            client.close()
        last = packets[-1]
        assert isinstance(last, Disconnect) and last.reason_code == code
        assert all(isinstance(packet, PubRec) for packet in packets[:-1])


@pytest.fixture
def mqtts(nats_server: NatsServer, make_gateway: Callable[..., Gateway]) -> Iterator[tuple[int, ssl.SSLContext]]:
    """A gateway's MQTT-over-TLS port and a client context trusting its certificate."""
    directory = temp_dir("fg-tls-")
    ca = CertificateAuthority(directory)
    server = ca.issue("server", server=True)
    port = free_port()
    env = {
        "FLOWGATE_HTTPS_PORT": str(free_port()),
        "FLOWGATE_MQTTS_PORT": str(port),
        "FLOWGATE_TLS_CERT_FILE": str(server.cert),
        "FLOWGATE_TLS_KEY_FILE": str(server.key),
    }
    make_gateway(nats_server.url, env=env)
    yield port, ssl.create_default_context(cafile=ca.path)
    shutil.rmtree(directory, ignore_errors=True)


def _refused_311_rounds(port: int, tls: ssl.SSLContext | None = None) -> None:
    connect = encode(Connect("", True, 60, "Bearer", b"not-a-jwt"))
    publishes = encode(Publish("linger/t", b"p" * 1024, 1, packet_id=1)) * 256
    for _ in range(ROUNDS):
        client = _Client(port, Decoder(64 * 1024, server_side=False), tls)
        try:
            client.sock.sendall(connect + publishes)  # in one write, before the CONNACK
            packets = client.until_eof()  # no ConnectionResetError
        finally:
            client.close()
        assert packets == [ConnAck(False, 4)]  # bad user name or password (protocols/mqtt/errors.py)


def test_a_refused_311_client_that_pipelined_publishes_reads_the_connack_then_eof(gateway: Gateway) -> None:
    _refused_311_rounds(gateway.mqtt_port)


def test_over_tls_too(mqtts: tuple[int, ssl.SSLContext]) -> None:
    """A TLS transport's own close lingers: close_notify, then it discards until the client's (linger.py)."""
    _refused_311_rounds(*mqtts)


class _Transport:
    """What ``LingeringWire`` uses of a transport, recording the calls."""

    def __init__(self, *, can_write_eof: bool = True) -> None:
        self.calls: list[str] = []
        self._can_write_eof = can_write_eof
        self.closed = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.calls.append("write")

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def can_write_eof(self) -> bool:
        return self._can_write_eof

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def close(self) -> None:
        self.calls.append("close")
        self.closed.set()


def _wire(transport: _Transport, lingering: Lingering) -> LingeringWire:
    return LingeringWire(transport, lingering)  # type: ignore[arg-type]


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linger, "LINGER", 0.4)
    monkeypatch.setattr(linger, "LINGER_QUIET", 0.1)


async def test_the_wire_half_closes_and_closes_once_the_client_is_quiet(short: None) -> None:
    transport, lingering = _Transport(), Lingering()
    wire = _wire(transport, lingering)
    wire.write(b"disconnect")
    wire.pause_reading()
    started = asyncio.get_running_loop().time()
    wire.close()
    wire.write(b"a late acknowledgement")  # dropped: nothing follows the FIN
    assert wire.closed and transport.calls == ["write", "pause_reading", "write_eof", "resume_reading"]
    await asyncio.wait_for(transport.closed.wait(), 0.3)  # the quiet timer closed it, before LINGER
    assert transport.calls[-1] == "close" and asyncio.get_running_loop().time() - started >= 0.09
    wire.peer_closed()  # connection_lost
    await asyncio.wait_for(lingering.wait(), 0.01)


async def test_a_client_still_sending_keeps_it_open_up_to_linger(short: None) -> None:
    transport, lingering = _Transport(), Lingering()
    wire = _wire(transport, lingering)
    loop = asyncio.get_running_loop()
    started = loop.time()
    wire.close()
    while not transport.closed.is_set():
        wire.discarded()  # bytes keep arriving
        await asyncio.sleep(0.02)
    assert 0.35 < loop.time() - started < 0.6
    wire.peer_closed()  # connection_lost
    await asyncio.wait_for(lingering.wait(), 0.1)


async def test_eof_from_the_client_ends_the_linger(short: None) -> None:
    transport, lingering = _Transport(), Lingering()
    wire = _wire(transport, lingering)
    wire.close()
    wire.peer_closed()  # eof_received: the protocol returns False and the transport closes itself
    await asyncio.wait_for(lingering.wait(), 0.05)
    assert "close" not in transport.calls


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "client-closed-first"])
async def test_tls_and_a_client_that_closed_first_close_at_once(tls: bool) -> None:
    transport, lingering = _Transport(can_write_eof=not tls), Lingering()
    wire = _wire(transport, lingering)
    if not tls:
        wire.peer_closed()  # eof_received
    wire.close()
    wire.close()
    assert transport.calls == ["close"]
    await asyncio.wait_for(lingering.wait(), 0.01)  # nothing lingers
