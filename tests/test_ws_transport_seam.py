"""The seam to uvicorn's internal WebSocket protocol (protocols/ws/transport.py), checked without a gateway.

The installed uvicorn must have what ``DirectProtocol`` relies on (a clear
message naming the version otherwise), the pin in pyproject.toml must be the
tested range, and the real class, on a real socket pair, must hand the
application a ``DirectWriter`` whose frames reach the peer and whose
``drained()`` returns when a paused connection is lost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from protocols.ws import transport
from protocols.ws.transport import EXTENSION, UVICORN_TESTED, DirectWriter, text_frames, uvicorn_problems

KEY = base64.b64encode(b"flowgate-seam-16").decode()
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


def test_installed_uvicorn_has_what_transport_relies_on() -> None:
    problems = uvicorn_problems()
    assert not problems, f"protocols/ws/transport.py cannot extend uvicorn {version('uvicorn')}: " + "; ".join(problems)


def test_pyproject_pins_the_tested_range() -> None:
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("uvicorn")]
    low, high = (".".join(map(str, bound)) for bound in UVICORN_TESTED)
    assert pins and re.sub(r"\s", "", pins[0]).endswith(f">={low},<{high}"), (
        f"pyproject.toml pins {pins}; protocols/ws/transport.py was tested with uvicorn >={low},<{high}"
    )


@dataclass
class Session:
    protocol: Any
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    direct: DirectWriter


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    """The real ``DirectProtocol`` on one end of a socket pair, a raw WebSocket client on the other."""
    assert not isinstance(transport.PROTOCOL_CLASS, str), "uvicorn has no websockets-sansio protocol to extend"
    handed: asyncio.Future[DirectWriter] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        handed.set_result(scope["extensions"][EXTENSION])
        while (await receive())["type"] != "websocket.disconnect":
            pass

    config = uvicorn.Config(app, ws_ping_interval=None, log_config=None, lifespan="off")
    config.load()
    protocol_class: Any = transport.PROTOCOL_CLASS
    state = ServerState()
    protocol = protocol_class(config, state, {})
    server_side, client_side = socket.socketpair()
    await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock=server_side)
    reader, writer = await asyncio.open_connection(sock=client_side)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: seam\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101") and ACCEPT in response
    direct = await asyncio.wait_for(handed, 5)
    yield Session(protocol, reader, writer, direct)
    writer.close()
    await asyncio.wait_for(asyncio.gather(*state.tasks), 5)  # the app saw the disconnect and returned


async def test_the_writer_batches_frames_onto_the_socket(session: Session) -> None:
    payloads = [b"one", b"x" * 300, b"y" * 70_000]
    assert session.direct.open
    session.direct.write(payloads)
    expected = text_frames(payloads)
    assert await asyncio.wait_for(session.reader.readexactly(len(expected)), 5) == expected


async def test_drained_returns_when_a_paused_connection_is_lost(session: Session) -> None:
    session.protocol.pause_writing()  # what asyncio calls when the buffer passes its high-water mark
    assert not session.protocol.writable.is_set()
    waiting = asyncio.ensure_future(session.direct.drained())
    session.writer.transport.abort()  # the peer goes away while the socket is paused
    await asyncio.wait_for(waiting, 5)
    assert not session.direct.open
