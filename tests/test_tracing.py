"""Tracing: one trace follows a message from an HTTP publish on one replica to its consumers on another.

Two gateway replicas run in this process (two apps, two NATS connections, one nats-server), so the
SDK's in-memory exporter sees both; only replica B has subscribers (SSE, MQTT, WebSocket), so its
``deliver`` spans can only come from the ``traceparent`` that travelled in the NATS headers.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets

from flowgate.server import GatewayServer, uvicorn_config
from gateway.draining import Draining
from gateway.logging import _trace_ids
from gateway.settings import Settings
from protocols.mqtt.packets import Publish
from tests.harness import NatsServer, free_port, shared_keys, temp_dir
from tests.mqtt_client import RawClient
from tests.sse_client import collect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def exporter() -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    yield memory


@pytest.fixture(scope="module")
async def replicas(exporter: Any, nats_server: NatsServer) -> AsyncIterator[list[Settings]]:
    shared = shared_keys()
    started: list[tuple[GatewayServer, asyncio.Task[None], Settings]] = []
    for _ in range(2):
        settings = Settings(
            host="127.0.0.1",
            http_port=free_port(),
            mqtt_port=free_port(),
            data_dir=temp_dir("fg-trace-"),
            nats_url=nats_server.url,
            otel_traces_exporter="memory",
            shutdown_grace_seconds=1,
            **shared,
        )
        draining = Draining()
        server = GatewayServer(uvicorn_config(settings, draining), draining)
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "replica failed to start"
                await asyncio.sleep(0.02)
        started.append((server, task, settings))
    yield [settings for _, _, settings in started]
    for server, task, settings in started:
        server.should_exit = True
        await task
        shutil.rmtree(settings.data_dir, ignore_errors=True)


async def test_one_trace_from_an_http_publish_to_consumers_on_another_replica(
    replicas: list[Settings], exporter: Any
) -> None:
    a, b = (f"http://127.0.0.1:{s.http_port}" for s in replicas)
    admin = {"Authorization": f"Bearer {replicas[0].admin_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        user = "u" + secrets.token_hex(4)
        assert (await http.post(a + "/api/v1/admin/users", headers=admin, json={"user_id": user})).status_code == 201
        key = (await http.post(f"{a}/api/v1/admin/users/{user}/keys", headers=admin, json={"name": "t"})).json()["key"]
        token = (await http.post(a + "/token", headers={"X-API-Key": key}, json={"app": "app"})).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        mqtt, _ = await RawClient.connect(replicas[1].mqtt_port, token)
        await mqtt.subscribe(("orders", 1))
        async with websockets.connect(f"ws://127.0.0.1:{replicas[1].http_port}/ws?token={token}") as ws:
            await ws.send('{"action": "subscribe", "topic": "orders", "id": 1}')
            await ws.recv()
            async with http.stream("GET", b + "/api/v1/subscribe", params={"topic": "orders"}, headers=headers) as sse:
                exporter.clear()
                answer = await http.post(a + "/api/v1/publish", headers=headers, json={"topic": "orders", "message": 7})
                assert answer.status_code == 200, answer.text
                (event,) = await collect(sse, 1)
                assert event.json()["data"] == 7
            assert '"data":7' in str(await asyncio.wait_for(ws.recv(), 10)).replace(" ", "")
        packet = await mqtt.expect(Publish)
        assert packet.payload == b"7"
        await mqtt.acknowledge(packet)
        await mqtt.close()

    spans = exporter.get_finished_spans()
    (publish,) = [s for s in spans if s.name == "publish"]
    assert publish.attributes["flowgate.protocol"] == "http"
    trace_id = publish.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_name = {name: [s for s in in_trace if s.name == name] for name in ("admission", "store", "deliver")}
    (admission,), (store,) = by_name["admission"], by_name["store"]
    assert admission.parent.span_id == publish.context.span_id and store.parent.span_id == publish.context.span_id
    # replica B's hub: the stored tier (SSE and WebSocket share one consumer) and the core tier (MQTT QoS 1)
    assert len(by_name["deliver"]) >= 2
    for deliver in by_name["deliver"]:
        assert deliver.parent.span_id == store.context.span_id, "continues the trace carried in the NATS headers"
        assert deliver.attributes["messaging.destination.name"].endswith("orders")
    assert not [s for s in spans if s.name == "deliver" and s.context.trace_id != trace_id]


def test_log_lines_inside_a_span_carry_its_ids(exporter: Any) -> None:
    from opentelemetry import trace

    assert "trace_id" not in _trace_ids(None, "info", {"event": "outside"})
    with trace.get_tracer("test").start_as_current_span("x") as span:
        event = _trace_ids(None, "info", {"event": "inside"})
    assert event["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert event["span_id"] == f"{span.get_span_context().span_id:016x}"
