"""The MQTT-over-TLS listener: a PROXY header from a trusted proxy may come before the TLS handshake.

A TCP load balancer passing TLS through (HAProxy ``mode tcp`` with
``send-proxy-v2``, AWS NLB with proxy protocol v2) writes the PROXY header in
clear, then the client's TLS bytes. asyncio's TLS servers start the handshake
on the first byte, so this listener accepts sockets itself: from a peer in
``FLOWGATE_TRUSTED_PROXIES`` it peeks at the first byte, and if a header starts
there it reads exactly the header (``ProxyHeaderReader.wanted``, and for a v1
line a peek up to its end) and nothing of the handshake; then the socket goes
to ``loop.connect_accepted_socket`` with the TLS context, in a task of its own so
that a slow handshake holds up no one else. Any other peer's socket goes
straight to the handshake (a PROXY header from it fails as TLS).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from gateway.proxies import TrustedProxies
from protocols.mqtt.proxy_protocol import V1_MAX_LINE, ProxyHeader, ProxyHeaderReader, ProxyProtocolError

log = logging.getLogger("flowgate.mqtt")

ProtocolFactory = Callable[[str], asyncio.Protocol]  # peer "host:port" -> the connection's protocol


class TlsListener:
    def __init__(
        self, factory: ProtocolFactory, tls: ssl.SSLContext, proxies: TrustedProxies, header_timeout: float
    ) -> None:
        self._factory = factory
        self._tls = tls
        self._proxies = proxies
        self._header_timeout = header_timeout
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()  # connections in their PROXY header or TLS handshake

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._socket = socket.create_server((host, port), backlog=1024, reuse_port=reuse_port)
        self._socket.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self._socket), name="mqtts-accept")

    def close(self) -> None:
        """Stop accepting; connections still in their header or handshake are dropped."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in self._pending:
            task.cancel()
        if self._socket is not None:
            self._socket.close()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, a connection reset while queued
                log.warning("mqtts accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._connect(sock, address))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, sock: socket.socket, address: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        peer = address
        try:
            if self._proxies.trusts(address[0]):
                async with asyncio.timeout(self._header_timeout):
                    header = await read_proxy_header(loop, sock)
                if header is not None and header.source is not None:
                    peer = header.source
            name = f"{peer[0]}:{peer[1]}"
            await loop.connect_accepted_socket(
                lambda: self._factory(name), sock, ssl=self._tls, ssl_handshake_timeout=self._header_timeout
            )
        except ProxyProtocolError as exc:
            log.warning("mqtts connection from proxy %s closed: %s", address[0], exc)
            sock.close()
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError: a failed handshake
            log.info("mqtts connection from %s:%d failed before MQTT: %s", address[0], address[1], exc)
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyHeader | None:
    """The PROXY header at the start of ``sock``, consuming exactly its bytes; None (nothing read) if none."""
    first = await _recv(loop, sock, 1, socket.MSG_PEEK)
    if first not in (b"P", b"\r"):
        return None  # a TLS ClientHello starts with 0x16
    reader = ProxyHeaderReader()
    while True:
        if first == b"P":  # v1: a line; what comes before its LF is all header
            peeked = await _recv(loop, sock, V1_MAX_LINE, socket.MSG_PEEK)
            end = peeked.find(b"\n")
            data = sock.recv(end + 1 if end >= 0 else len(peeked))
        else:
            data = await _recv(loop, sock, reader.wanted())
        result = reader.feed(data)
        if result is not None:
            header, rest = result
            if header is None or rest:
                raise ProxyProtocolError("neither a PROXY header nor a TLS handshake")
            return header


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int, flags: int = 0) -> bytes:
    while True:
        try:
            data = sock.recv(size, flags)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        if not data:
            raise ConnectionResetError("closed before the TLS handshake")
        return data


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
