"""The billing guard over MQTT 3.1.1: CONNACK 5 when spent, disconnect once spent, rate limits slow a publisher."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from protocols.mqtt.packets import Publish
from tests.billing_env import PLANS, billing_gateway, stored
from tests.harness import Gateway, NatsServer
from tests.mqtt_client import RawClient

NOT_AUTHORIZED = 5


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    with billing_gateway(nats_server.url, "fg-billing-mqtt-") as gateway:
        yield gateway


async def test_connack_5_when_spent_and_a_top_up_restores(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    token = gw.token(key)
    gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 0}})
    client, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == NOT_AUTHORIZED
    assert await client.closed_by_server()
    assert gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 3}).status_code == 200
    client, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == 0
    await client.publish("t", b"paid", qos=1)
    await client.close()


async def test_the_publish_crossing_the_quota_disconnects_and_is_not_stored(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")  # 20 units
    token = gw.token(key)
    client, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == 0
    for i in range(20):
        await client.publish("t", f"m{i}".encode(), qos=1)  # each one acknowledged: stored
    await client.send(Publish("t", b"refused", 1, False, False, client.next_id()))
    assert await client.closed_by_server()  # no PUBACK: the client keeps it and re-sends after a top-up
    again, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == NOT_AUTHORIZED
    await again.close()
    assert gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 100}).status_code == 200
    client, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == 0
    await client.publish("t", b"after", qos=1)
    await client.close()
    assert await stored(gw, token, 21) == [f"m{i}" for i in range(20)] + ["after"]


async def test_a_fast_publisher_is_slowed_down_not_dropped(gw: Gateway) -> None:
    plan = PLANS["twenty-per-second"]
    _, key = gw.new_user(plan="twenty-per-second")
    token = gw.token(key)
    client, connack = await RawClient.connect(gw.mqtt_port, token)
    assert connack.return_code == 0
    count = 50
    start = time.monotonic()
    for i in range(count - 1):
        await client.send(Publish("t", str(i).encode(), 0, False, False, None))  # QoS 0, as fast as the socket goes
    await client.publish("t", str(count - 1).encode(), qos=1)  # acknowledged after every earlier one was handled
    elapsed = time.monotonic() - start
    # the bucket gives `burst` at once, then `rate` per second: the rest had to wait for tokens
    assert elapsed >= (count - plan["burst"]) / plan["rate"] * 0.9
    await client.publish("t", b"still-connected", qos=1)
    await client.close()
    assert await stored(gw, token, count + 1) == [*map(str, range(count)), "still-connected"]


async def test_mqtt_connections_count_against_the_plan_and_deliveries_are_billed(gw: Gateway) -> None:
    _, key = gw.new_user(plan="tiny")  # two connections
    token = gw.token(key)
    subscriber, connack = await RawClient.connect(gw.mqtt_port, token, client_id="sub")
    assert connack.return_code == 0
    await subscriber.subscribe(("t", 0))
    publisher, connack = await RawClient.connect(gw.mqtt_port, token, client_id="pub")
    assert connack.return_code == 0
    third, connack = await RawClient.connect(gw.mqtt_port, token, client_id="third")
    assert connack.return_code == NOT_AUTHORIZED
    await third.close()
    for i in range(3):
        await publisher.publish("t", str(i).encode(), qos=1)
    assert [(await subscriber.expect(Publish)).payload for _ in range(3)] == [b"0", b"1", b"2"]
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        usage = (await http.get("/api/v1/usage")).json()
    assert usage["app_usage"] == {"publish": 3, "queue_send": 0, "delivery": 3, "units": 6}
    assert usage["connections"] == 2
    await publisher.close()
    await subscriber.close()
