"""``/mqtt``: MQTT 3.1.1 over WebSocket (binary frames, subprotocol ``mqtt``) for browsers (MQTT.js).

The same ``MqttConnection`` as the TCP listener runs behind a small ``Wire``
adapter: received binary frames are fed to it as a byte stream (a packet may
span frames and a frame may carry several packets [MQTT-6.0.0-2]); its writes
are queued and sent by one sender task, and when that queue holds more than
``HIGH_WATER`` bytes the connection is told to stop writing deliveries, as the
TCP transport would. A text frame is a protocol error [MQTT-6.0.0-1]. The
server picks the ``mqtt`` subprotocol the client offers [MQTT-6.0.0-3, 6.0.0-4];
an upgrade without it is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from protocols.mqtt.connection import MqttConnection
from protocols.mqtt.context import MqttContext

log = logging.getLogger("flowgate.mqtt")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class WebSocketWire:
    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._closed = False
        self.conn: MqttConnection | None = None
        self._writes_paused = False

    # -- Wire ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._queue.append(data)
        self._queued += len(data)
        self._wake.set()
        if self._queued > HIGH_WATER and not self._writes_paused and self.conn is not None:
            self._writes_paused = True
            self.conn.pause_writing()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._reading.set()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # -- tasks --------------------------------------------------------------------------------

    async def send_loop(self) -> None:
        """Send queued bytes as binary frames until closed; then close the WebSocket."""
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                chunk = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                await self._ws.send_bytes(chunk)
                if self._writes_paused and self._queued < LOW_WATER and self.conn is not None:
                    self._writes_paused = False
                    self.conn.resume_writing()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
        finally:
            try:
                await self._ws.close()
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # already closed by the peer or the server

    async def receive_loop(self, conn: MqttConnection) -> None:
        try:
            while not self._closed:
                await self._reading.wait()
                if self._closed:
                    break
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    conn.data_received(b"\x00\x00")  # a text frame: fail the stream [MQTT-6.0.0-1]
                    break
                conn.data_received(data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            conn.connection_lost()


def mqtt_over_websocket(ctx: MqttContext) -> Callable[[WebSocket], Awaitable[None]]:
    """The ``/mqtt`` endpoint, serving its connections with the MQTT front end's shared context."""

    async def endpoint(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
        if chosen is None:
            await websocket.close(code=1002, reason="offer the 'mqtt' subprotocol")
            return
        await websocket.accept(subprotocol=chosen)
        wire = WebSocketWire(websocket)
        client = websocket.client
        conn = MqttConnection(ctx, wire, f"{client.host}:{client.port}" if client else "?", transport_name="websocket")
        wire.conn = conn
        sender = asyncio.get_running_loop().create_task(wire.send_loop())
        try:
            await wire.receive_loop(conn)
            await conn.wait_closed()
        finally:
            wire.close()
            await sender

    return endpoint
