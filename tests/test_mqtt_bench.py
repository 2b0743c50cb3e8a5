"""Smoke tests of the MQTT load tool (bench/mqtt_loadclient.py) on small runs against real brokers.

The benchmark's figures are only worth something if the tool counts right: every
published message delivered once, in order, to every subscriber, with latencies
and broker resource figures filled in.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.mqtt_loadclient import BrokerRefused, Result, Scenario, Target, run_scenario
from bench.mqtt_throughput import GATEWAY_ENV, mosquitto, table
from tests.harness import Gateway, NatsServer

SMALL = (
    Scenario("qos0", qos=0, subscribers=1, messages=3000, window=500, batch=100),
    Scenario("qos1", qos=1, subscribers=1, messages=2000, window=500, ack_window=300, batch=100),
    Scenario("fanout", qos=0, subscribers=10, messages=300, window=50, batch=25),
    Scenario("qos1-5k", qos=1, subscribers=1, messages=1000, window=500, batch=50, rate=5000),
)


def check(scenario: Scenario, result: Result) -> None:
    assert not result.stalled
    assert result.published == scenario.messages
    assert result.deliveries == scenario.messages * scenario.subscribers
    assert result.lost == 0 and result.out_of_order == 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.broker_rss_mb > 1
    assert result.rate > 0


@pytest.mark.parametrize("scenario", SMALL, ids=[s.name for s in SMALL])
async def test_load_tool_against_mosquitto(scenario: Scenario) -> None:
    with mosquitto() as target:
        result = await run_scenario(target, scenario)
    check(scenario, result)
    if scenario.rate:  # paced: the rate follows the schedule, not the broker's ceiling
        assert result.rate < scenario.rate * 1.2
    assert "mosquitto" in table([result])


async def test_load_tool_against_the_gateway(nats_server: NatsServer, make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(nats_server.url, env=dict(GATEWAY_ENV))
    _, token = gateway.user_token(app="bench")
    assert gateway.process is not None
    target = Target("flow-gate", "127.0.0.1", gateway.mqtt_port, "Bearer", token.encode(), (gateway.pid,))
    for scenario in SMALL[:3]:
        check(scenario, await run_scenario(target, scenario))


async def test_load_tool_reports_a_refused_login(nats_server: NatsServer, make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(nats_server.url, env=dict(GATEWAY_ENV))
    target = Target("flow-gate", "127.0.0.1", gateway.mqtt_port, "Bearer", b"not-a-jwt", (gateway.pid,))
    with pytest.raises(BrokerRefused, match="CONNACK 4"):
        await run_scenario(target, SMALL[0])
