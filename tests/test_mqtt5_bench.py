"""Smoke test of the MQTT 5 load (bench/mqtt_loadclient.py with protocol 5) on small runs: mosquitto -V 5 and
the gateway, including a 10-member shared subscription where each message reaches exactly one member."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bench.mqtt_loadclient import Scenario, Target, run_scenario
from bench.mqtt_throughput import GATEWAY_ENV, mosquitto
from tests.harness import Gateway, NatsServer

SMALL5 = (
    Scenario("qos1", qos=1, subscribers=1, messages=400, window=200, ack_window=100, batch=50),
    Scenario("shared10", qos=1, subscribers=10, messages=400, window=200, ack_window=100, batch=50, shared=True),
)


async def test_v5_load_against_mosquitto_and_the_gateway(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    gateway = make_gateway(nats_server.url, env=dict(GATEWAY_ENV))
    _, token = gateway.user_token(app="bench")
    ours = Target("flow-gate", "127.0.0.1", gateway.mqtt_port, "Bearer", token.encode(), (gateway.pid,), protocol=5)
    with mosquitto() as theirs:
        for target in (replace(theirs, protocol=5), ours):
            for scenario in SMALL5:
                result = await run_scenario(target, scenario)
                assert not result.stalled, (target.name, scenario.name)
                assert result.deliveries == scenario.messages and result.lost == 0, (target.name, scenario.name)
                assert result.out_of_order == 0 and result.rate > 0
