"""The replicas' rate share without a network: what is sent, what a receiver charges, expiry, malformed input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.billing import share as share_module
from gateway.billing.share import CHUNK, RateShare


class FakeGuard:
    interval = 0.5

    def __init__(self) -> None:
        self.clock = 100.0
        self.applied: list[tuple[str, dict[str, int], dict[str, int] | None]] = []
        self.invalidated: list[str] = []
        self.connections: dict[str, int] = {}

    def now(self) -> float:
        return self.clock

    def local_connections(self) -> dict[str, int]:
        return dict(self.connections)

    def apply_remote(self, replica: str, spent: dict[str, int], connections: dict[str, int] | None) -> None:
        self.applied.append((replica, spent, connections))

    def invalidate(self, user_id: str) -> None:
        self.invalidated.append(user_id)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def broadcast(_bus: object, _name: str, data: bytes) -> None:
        messages.append(orjson.loads(data))

    monkeypatch.setattr(share_module, "broadcast", broadcast)
    return messages


async def test_spend_is_sent_once_in_chunks_with_connections_first(sent: list[dict[str, Any]]) -> None:
    guard = FakeGuard()
    share = RateShare(None, guard)  # type: ignore[arg-type]
    for i in range(CHUNK + 5):
        share.spent(f"u{i}")
    share.spent("u0", 2)
    share.spent("gone", 1)
    share.spent("gone", -1)  # given back: not sent
    guard.connections = {"u1": 3}
    await share.send()
    assert len(sent) == 2
    assert sent[0]["connections"] == {"u1": 3} and "connections" not in sent[1]
    spent = {**sent[0]["spent"], **sent[1]["spent"]}
    assert len(spent) == CHUNK + 5 and spent["u0"] == 3 and "gone" not in spent
    sent.clear()
    guard.connections = {}
    await share.send()  # connections dropped to none: one message says so
    assert sent == [{"replica": share.replica, "spent": {}, "connections": {}}]
    sent.clear()
    await share.send()  # idle: nothing at all
    assert sent == []


async def test_receiving_charges_and_expires_silent_replicas(sent: list[dict[str, Any]]) -> None:
    guard = FakeGuard()
    share = RateShare(None, guard)  # type: ignore[arg-type]
    share._receive(orjson.dumps({"replica": "other", "spent": {"a": 4}, "connections": {"a": 2}}))
    share._receive(orjson.dumps({"replica": "other", "spent": {"b": 1}}))
    share._receive(orjson.dumps({"replica": share.replica, "spent": {"a": 100}}))  # our own: ignored
    share._receive(b"not json")
    share._receive(orjson.dumps({"spent": {}}))
    assert guard.applied == [("other", {"a": 4}, {"a": 2}), ("other", {"b": 1}, None)]
    share._receive(orjson.dumps({"replica": "other", "changed": ["a"]}))
    assert guard.invalidated == ["a"]
    guard.clock += 10  # silent for more than EXPIRE intervals: its connections no longer count
    await share.send()
    assert guard.applied[-1] == ("other", {}, {})
