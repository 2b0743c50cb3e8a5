"""One server, one shutdown: on SIGTERM every listener stops accepting at once and each protocol is told.

While an in-flight HTTP request still finishes, a new MQTT connection is already refused (before, the
MQTT listener kept accepting until HTTP had drained); SSE ends with a ``retry:`` hint, WebSockets close
with 1012, MQTT clients are disconnected. In lame duck (FLOWGATE_LAME_DUCK_SECONDS) the disconnects
are spread over the window instead of landing in the same instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import websockets

from tests.harness import Gateway, NatsServer
from tests.mqtt_client import RawClient

pytestmark = pytest.mark.timeout(60)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def rest_of(lines: AsyncIterator[str]) -> list[str]:
    """Every line of an SSE stream until the server ends it."""
    return [line async for line in lines]


async def test_sigterm_stops_every_listener_at_once_and_tells_each_protocol(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    gw = make_gateway(nats_server.url, env={"FLOWGATE_SHUTDOWN_GRACE": "4"})
    _, token = gw.user_token()
    headers = {"Authorization": f"Bearer {token}"}
    mqtt, _ = await RawClient.connect(gw.mqtt_port, token)
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=15) as http:
        assert (await http.put("/api/v1/queues/slow")).status_code in (200, 201)
        async with http.stream("GET", "/api/v1/subscribe", params={"topic": "t"}) as sse:
            async with websockets.connect(f"{gw.ws_url}/ws?token={token}") as ws:
                await ws.send('{"action": "subscribe", "topic": "t", "id": 1}')
                await ws.recv()
                await http.post("/api/v1/publish", json={"topic": "t", "message": 1})
                lines = sse.aiter_lines()
                async for line in lines:
                    if line.startswith("id: "):
                        break
                # an in-flight request: a long poll of 2 s on an empty queue
                poll = asyncio.create_task(http.get("/api/v1/queues/slow/messages", params={"wait": 2}))
                await asyncio.sleep(0.2)  # the request reached the server (nothing observable to wait on)
                assert gw.process is not None
                gw.process.terminate()
                started = time.monotonic()
                tail = await asyncio.wait_for(rest_of(lines), 5)
                assert any(line.startswith("retry: ") for line in tail), tail
                assert await refused(gw.mqtt_port) and await refused(gw.http_port)
                assert not poll.done(), "checked while HTTP is still draining"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    async with asyncio.timeout(5):
                        while True:
                            await ws.recv()  # the message published above, then the close
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
                assert await mqtt.closed_by_server(5)
                answer = await poll
                assert answer.status_code == 200 and answer.json()["messages"] == []
    code = await asyncio.to_thread(gw.process.wait, 10)
    assert code in (0, -15), "".join(gw.log[-20:])
    assert time.monotonic() - started < 4 + 1


async def test_lame_duck_spreads_the_disconnects_over_the_window(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    window = 1.2
    gw = make_gateway(nats_server.url, env={"FLOWGATE_LAME_DUCK_SECONDS": str(window), "FLOWGATE_SHUTDOWN_GRACE": "2"})
    _, token = gw.user_token()
    clients = [(await RawClient.connect(gw.mqtt_port, token))[0] for _ in range(8)]
    sockets = [await websockets.connect(f"{gw.ws_url}/ws?token={token}") for _ in range(4)]
    closed_at: list[float] = []

    async def mqtt_closed(client: RawClient) -> None:
        assert await client.closed_by_server(window + 3)
        closed_at.append(time.monotonic())

    async def ws_closed(ws: websockets.ClientConnection) -> None:
        await ws.wait_closed()
        closed_at.append(time.monotonic())

    assert gw.process is not None
    gw.process.terminate()
    started = time.monotonic()
    watchers = asyncio.gather(*(mqtt_closed(c) for c in clients), *(ws_closed(w) for w in sockets))
    # new connections are refused as soon as the signal is handled (uvicorn looks every 0.1 s), long before
    # the window ends
    async with asyncio.timeout(1):
        while not await refused(gw.mqtt_port):  # noqa: ASYNC110  # polling the port is the observation
            await asyncio.sleep(0.02)
    assert time.monotonic() - started < window / 2
    await asyncio.wait_for(watchers, window + 3)
    spread = max(closed_at) - min(closed_at)
    assert spread > window / 2, f"disconnects spread over {spread:.2f} s only"
    assert max(closed_at) - started < window + 1
    code = await asyncio.to_thread(gw.process.wait, 10)
    assert code in (0, -15), "".join(gw.log[-20:])
    for client in clients:
        await client.close()
