"""gateway/bus/natspy.py: the installed nats-py has what it uses, nothing else uses nats-py's private
names, and its accessors work on a real client connected to a real nats-server."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from nats.aio.subscription import Subscription
from nats.js import api

from gateway.bus import natspy
from gateway.bus.acks import AckClient
from gateway.bus.parser import FastParser
from tests.harness import NatsServer

ROOT = Path(__file__).resolve().parent.parent
SEAM = ROOT / "gateway" / "bus" / "natspy.py"
PRIVATE = {name for _, names in natspy.REQUIRED.values() for name in names}


def test_installed_natspy_has_what_the_seam_uses() -> None:
    assert natspy.missing_internals() == []
    natspy.check_natspy()


def test_a_missing_internal_is_named_with_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    how, names = natspy.REQUIRED["Client"]
    monkeypatch.setitem(natspy.REQUIRED, "Client", (how, (*names, "_gone_in_this_release")))
    monkeypatch.setitem(natspy.REQUIRED, "JetStreamContext._JSI", ("source", ("_dseq", "_renamed_seq")))
    with pytest.raises(natspy.NatsPyMismatch) as caught:
        natspy.check_natspy()
    message = str(caught.value)
    assert f"nats-py {natspy.natspy_version()} " in message and natspy.natspy_version() != "unknown"
    assert "Client._gone_in_this_release" in message and "JetStreamContext._JSI._renamed_seq" in message
    assert "_JSI._dseq" not in message


def _private_uses(path: Path) -> list[str]:
    """``file:line name`` for each nats-py private name read or written on an object other than ``self``,
    or defined as a method of a subclass (an override of nats-py's)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr}")
        elif isinstance(node, ast.ClassDef) and node.bases:  # a subclass overriding one of nats-py's methods
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in PRIVATE:
                    found.append(f"{path.relative_to(ROOT)}:{item.lineno} def {item.name}")
    return found


def test_only_the_seam_uses_natspy_private_names() -> None:
    assert len(_private_uses(SEAM)) >= 15  # the scan sees them where they are
    offenders = [
        use
        for package in ("gateway", "protocols", "auth")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != SEAM
        for use in _private_uses(path)
    ]
    assert offenders == [], "use gateway/bus/natspy.py for nats-py internals"


@pytest.fixture
def nats_server(make_nats: Callable[[], NatsServer]) -> NatsServer:
    return make_nats()


async def test_accessors_on_a_real_client(nats_server: NatsServer) -> None:
    nc = AckClient()
    assert isinstance(nc._ps, FastParser)  # use_parser installed the gateway's parser
    await nc.connect(servers=[nats_server.url], max_reconnect_attempts=0)
    try:
        assert natspy.max_payload(nc) == nats_server.max_payload

        # A core subscription delivered raw: a frame appended to the pending buffer comes back through
        # FastClient._dispatch_fast, with the header block as the parser cut it.
        core: asyncio.Queue[tuple[bytes, int, bytes, bytes | None]] = asyncio.Queue()
        sub = await nc.subscribe("seam.core", cb=_never)
        assert isinstance(sub, Subscription) and natspy.subscription_id(sub) in nc._subs
        natspy.deliver_directly(sub, _never_sync, lambda s, seq, ns, body, hdr: core.put_nowait((s, seq, body, hdr)))
        await nc.flush()
        block = b"NATS/1.0\r\nFg-Type: text\r\nFg-QoS: 0\r\n\r\n"
        body = b"hello"
        command = b"HPUB seam.core %d %d\r\n%s%s\r\n" % (len(block), len(block) + len(body), block, body)
        in_before, out_before = nc.stats["in_msgs"], nc.stats["out_msgs"]
        assert natspy.append(nc, command, len(body)) is False  # far below the pending limit
        assert nc.stats["out_msgs"] == out_before + 1
        await natspy.drain(nc)
        subject, seq, got, hdr = await asyncio.wait_for(core.get(), 5)
        assert (subject, seq, got, hdr) == (b"seam.core", 0, body, block)
        assert nc.stats["in_msgs"] == in_before + 1
        assert natspy.parse_header_lines(block[10:]) == {"Fg-Type": "text", "Fg-QoS": "0"}

        # An ordered JetStream consumer: its inner subscription, delivered raw, gets the stream sequences.
        js = nc.jetstream(timeout=5)
        await js.add_stream(api.StreamConfig(name="SEAM", subjects=["seam.js.>"]))
        stream: asyncio.Queue[int] = asyncio.Queue()
        push = await js.subscribe("seam.js.>", stream="SEAM", cb=_never, ordered_consumer=True, idle_heartbeat=2.0)
        inner = natspy.inner_subscription(push)
        assert isinstance(inner, Subscription) and inner._jsi is not None
        natspy.deliver_directly(inner, _never_sync, lambda s, seq, ns, body, hdr: stream.put_nowait(seq))
        for i in range(3):
            await js.publish(f"seam.js.{i}", b"x")
        assert [await asyncio.wait_for(stream.get(), 5) for _ in range(3)] == [1, 2, 3]
        assert inner._jsi._dseq == 4 and inner._jsi._sseq == 3  # the ordered consumer's own bookkeeping
    finally:
        await nc.close()


async def _never(msg: object) -> None:
    raise AssertionError(f"delivered through nats-py's task, not directly: {msg}")


def _never_sync(msg: object) -> None:
    raise AssertionError(f"delivered as a Msg, not raw: {msg}")
