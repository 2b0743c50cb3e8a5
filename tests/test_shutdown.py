"""Graceful shutdown: with clients of every protocol connected, SIGTERM ends the gateway within its grace period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import paho.mqtt.client as mqtt
import websockets
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Gateway, NatsServer
from tests.sse_client import collect


async def test_sigterm_with_every_kind_of_client_connected(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    gw = make_gateway(nats_server.url, env={"FLOWGATE_SHUTDOWN_GRACE": "2"})
    _, token = gw.user_token()
    mqtt_client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shutdown-test")
    mqtt_client.username_pw_set("Bearer", token)
    mqtt_client.connect("127.0.0.1", gw.mqtt_port)
    mqtt_client.loop_start()
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with client.stream("GET", "/api/v1/subscribe", params={"topic": "t", "token": token}) as sse:
            async with websockets.connect(f"{gw.ws_url}/ws?token={token}") as ws:
                await ws.send('{"action": "subscribe", "topic": "t", "id": 1}')
                await ws.recv()
                await client.post(
                    "/api/v1/publish", headers={"Authorization": f"Bearer {token}"}, json={"topic": "t", "message": 1}
                )
                await collect(sse, 1)
                process = gw.process
                assert process is not None
                started = time.monotonic()
                process.terminate()
                code = await asyncio.to_thread(process.wait, 15)
                took = time.monotonic() - started
    mqtt_client.loop_stop()
    assert code in (0, -15), "".join(gw.log[-20:])  # uvicorn re-raises SIGTERM after a clean shutdown
    assert not any("timeout graceful shutdown exceeded" in line for line in gw.log), "".join(gw.log[-20:])
    assert took < 2, f"shutdown took {took:.1f}s (grace 2 s): a stream held it up"
