"""KV buckets through the bus, against a real nats-server: listing sees what was just written."""

from __future__ import annotations

import secrets

import pytest

from gateway.bus import Bus
from gateway.errors import Conflict
from gateway.settings import Settings
from tests.harness import NatsServer


async def test_keys_lists_a_key_right_after_it_is_written(nats_server: NatsServer) -> None:
    bus = Bus(Settings.from_env({}))
    await bus.connect([nats_server.url])
    try:
        bucket = await bus.bucket("fg_test_" + secrets.token_hex(4))
        assert await bucket.keys() == []
        for i in range(50):  # the race nats-py's watcher had: a key written just before listing
            await bucket.create(f"user.u{i}", b"x")
            assert f"user.u{i}" in await bucket.keys("user.*")
        await bucket.put("other.a", b"y")
        assert sorted(await bucket.keys("other.>")) == ["other.a"]
        await bucket.delete("user.u0")
        assert await bucket.get("user.u0") is None  # listing may still name it; get() says it is gone
        entry = await bucket.get("user.u1")
        assert entry is not None
        revision = entry.revision
        await bucket.update("user.u1", b"z", revision)
        with pytest.raises(Conflict):
            await bucket.update("user.u1", b"w", revision)  # a stale revision
    finally:
        await bus.close()
