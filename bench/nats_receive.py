"""Receive-path micro-benchmark: nats-py's parser and dispatch against ``FastParser`` + raw delivery.

    python bench/nats_receive.py [--messages 200000] [--chunk 32768] [--rounds 5]

No server: a pre-recorded byte stream of JetStream ordered-consumer pushes
(``HMSG`` with ``$JS.ACK.<stream>.<consumer>.1.<sseq>.<dseq>.<ns>.0`` replies,
``Fg-Type``/``Fg-QoS`` headers, 100-byte bodies) is fed in read-sized chunks to

- stock: nats-py's ``Parser`` and ``Client._process_msg`` (header parse, ``Msg``,
  ordered-consumer tracking) into a ``deliver_directly`` Msg handler that runs
  ``to_delivery``, i.e. the gateway's receive path before ``FastParser``;
- fast: ``AckClient`` (``FastParser``, ``_dispatch_fast``) into
  ``LiveSubscription``'s raw handler.

Both end in a ``Delivery`` handed to a no-op callback. It prints messages/s,
microseconds per message (best of ``--rounds``) and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.protocol.parser import Parser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.bus.acks import AckClient
from gateway.bus.direct import deliver_directly
from gateway.bus.subscriptions import LiveSubscription, to_delivery
from gateway.payload import Delivery

SID = 7
HEADERS = [
    b"NATS/1.0\r\nFg-Type: %s\r\nFg-QoS: %d\r\n\r\n" % (kind, qos) for kind in (b"binary", b"text") for qos in (0, 1)
]


def record(messages: int) -> bytes:
    """The bytes a server sends for ``messages`` ordered-consumer pushes."""
    out = bytearray()
    stamp = 1732571234123456789
    for i in range(messages):
        subject = b"fg.msg.u1.app.sensors.%d" % (i % 16)
        reply = b"$JS.ACK.FG_MESSAGES.oc%d.1.%d.%d.%d.0" % (SID, 1000 + i, i + 1, stamp + i * 1000)
        hdr = HEADERS[i % len(HEADERS)]
        body = (b"%08d" % i) * 12 + b"abcd"  # 100 bytes
        out += b"HMSG %s %d %s %d %d\r\n%s%s\r\n" % (subject, SID, reply, len(hdr), len(hdr) + len(body), hdr, body)
    return bytes(out)


def attach(client: Client, raw: bool) -> list[int]:
    """An ordered JetStream subscription ``SID`` on ``client`` delivering directly; returns a delivery counter."""
    count = [0]

    def on_delivery(delivery: Delivery) -> None:
        count[0] += 1

    sub = Subscription(client, SID, "_INBOX.bench", cb=lambda msg: None)  # type: ignore[arg-type,return-value]
    jsi = JetStreamContext._JSI(
        js=None,  # type: ignore[arg-type]
        conn=client,
        stream="FG_MESSAGES",
        ordered=True,
        psub=None,  # type: ignore[arg-type]
        sub=sub,
        ccreq=None,  # type: ignore[arg-type]
    )
    sub._jsi = jsi
    client._subs[SID] = sub
    if raw:
        live = LiveSubscription("fg.msg.u1.app.>", on_delivery)
        deliver_directly(sub, live._on_msg, live._on_raw)
    else:
        deliver_directly(sub, lambda msg: on_delivery(to_delivery(msg)))
    return count


async def run(stream: bytes, chunk: int, raw: bool, messages: int) -> float:
    client: Any = AckClient() if raw else Client()
    if not raw:
        client._ps = Parser(client)
    count = attach(client, raw)
    parse = client._ps.parse
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    start = time.perf_counter()
    for piece in chunks:
        await parse(piece)
    elapsed = time.perf_counter() - start
    assert count[0] == messages, (count[0], messages)
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=32768, help="bytes per read, as nats-py's read loop")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stream = record(args.messages)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, raw in (("stock nats-py", False), ("FastParser + raw", True)):
            elapsed = await run(stream, args.chunk, raw, args.messages)
            best[name] = min(best.get(name, elapsed), elapsed)
    print(
        f"{args.messages} messages, {len(stream) / args.messages:.0f} bytes each on the wire, {args.chunk}-byte reads"
    )
    print(f"{'path':<18}{'messages/s':>14}{'us/message':>12}")
    for name, elapsed in best.items():
        print(f"{name:<18}{args.messages / elapsed:>14,.0f}{elapsed / args.messages * 1e6:>12.2f}")
    stock, fast = best.values()
    print(f"ratio (stock time / fast time): {stock / fast:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
