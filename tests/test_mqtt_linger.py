"""A client still sending when the gateway closes gets the closing packet, then EOF, not a reset (linger.py).

Raw blocking sockets: the client writes without reading, so that its bytes are
still arriving when the gateway decides to close; only then does it read. A
close with those bytes unread would make the kernel send a RST, and the client
would lose the DISCONNECT (or the refusing CONNACK) already sent. Each case
runs a few rounds, the failure being a matter of timing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from protocols.mqtt.codec import Decoder, encode
from protocols.mqtt.codec5 import ClientDecoder, encode5
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
