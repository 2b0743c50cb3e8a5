"""A plans file and gateway environment for the billing tests (small quotas, slow rates, fast sync)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import httpx
import orjson

from tests.harness import Gateway, temp_dir
from tests.sse_client import collect


class Plan(TypedDict):
    """One plan of the plans file (gateway/billing/plans.py reads it)."""

    quota: int
    rate: float
    burst: int
    max_connections: int
    max_message_bytes: int


GENEROUS: Plan = {
    "quota": 10_000_000,
    "rate": 10_000,
    "burst": 10_000,
    "max_connections": 100,
    "max_message_bytes": 1 << 20,
}
PLANS: dict[str, Plan] = {
    "free": GENEROUS,
    "tiny": {"quota": 20, "rate": 10_000, "burst": 10_000, "max_connections": 2, "max_message_bytes": 1000},
    "slow": {"quota": 10_000_000, "rate": 0.05, "burst": 5, "max_connections": 100, "max_message_bytes": 1 << 20},
    "thousand": {"quota": 1000, "rate": 10_000, "burst": 10_000, "max_connections": 100, "max_message_bytes": 1 << 20},
    "twenty-per-second": {
        "quota": 10_000_000,
        "rate": 20,
        "burst": 20,
        "max_connections": 100,
        "max_message_bytes": 1 << 20,
    },
}
SYNC_INTERVAL = 0.2


def billing_env(directory: Path, **extra: str) -> dict[str, str]:
    path = directory / "plans.json"
    path.write_bytes(orjson.dumps({"plans": PLANS}))
    return {"FLOWGATE_PLANS_FILE": str(path), "FLOWGATE_BILLING_SYNC_INTERVAL": str(SYNC_INTERVAL), **extra}


@contextmanager
def billing_gateway(nats_url: str, prefix: str) -> Iterator[Gateway]:
    """A gateway with the test plans on ``nats_url``, its data dir removed afterwards."""
    data = temp_dir(prefix)
    gateway = Gateway(nats_url, data, env=billing_env(data)).start()
    try:
        yield gateway
    finally:
        gateway.stop()
        shutil.rmtree(data, ignore_errors=True)


async def stored(gw: Gateway, token: str, count: int) -> list[object]:
    """The data of the first ``count`` messages stored in the token's namespace (replayed over SSE)."""
    async with httpx.AsyncClient(
        base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        params = {"topic": "#", "last_event_id": "0"}
        async with http.stream("GET", "/api/v1/subscribe", params=params) as response:
            assert response.status_code == 200
            return [e.json()["data"] for e in await collect(response, count)]
