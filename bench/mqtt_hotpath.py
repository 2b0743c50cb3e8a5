"""What one MQTT message costs the gateway in-process: a meter for comparing two versions of the hot path.

Not a peer benchmark (``mqtt_throughput.py`` is): the real services run on a
real ``nats-server -js``, but the two MQTT connections (a publisher and a
subscriber on one topic) are fed and drained in memory, so no socket, load tool
or scheduler noise is measured. A subscriber at QoS 1 acknowledges what it gets.

    .venv/bin/python bench/mqtt_hotpath.py --qos 0                 # CPU µs per message, best of 9 rounds
    .venv/bin/python bench/mqtt_hotpath.py --qos 1 --instructions  # instructions per message (valgrind)
    .venv/bin/python bench/mqtt_hotpath.py --qos 1 --protocol 5    # both connections speak MQTT 5.0

``--instructions`` runs this script twice under ``valgrind --tool=callgrind``
(5,000 and 25,000 messages) and divides the difference, so start-up cancels
out. Instruction counts repeat to within a fraction of a percent on a busy
machine, where timings vary by a fifth; the client side's own decoding (QoS 1)
is included, the same in both versions compared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flowgate.server import GC_THRESHOLDS  # noqa: E402
from flowgate.services import running_services  # noqa: E402
from gateway.bus.mqtt_store import MqttStore  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.topics import Namespace  # noqa: E402
from protocols.mqtt.codec import Decoder, encode, encode_publish  # noqa: E402
from protocols.mqtt.codec5 import ClientDecoder, encode5, encode_publish5  # noqa: E402
from protocols.mqtt.connection import MqttConnection  # noqa: E402
from protocols.mqtt.context import MqttConfig, MqttContext  # noqa: E402
from protocols.mqtt.packets import Connect, PubAck, Publish, Subscribe  # noqa: E402
from protocols.mqtt.v5 import RECEIVE_MAXIMUM  # noqa: E402
from tests.harness import NatsServer  # noqa: E402

BATCH = 500  # PUBLISHes per data_received call
PAYLOAD = b"\x00" * 16 + b"x" * 84  # 100 bytes, binary (as the throughput benchmark's timestamps)


class MemoryWire:
    """A connection's socket: counts what is written; the subscriber's collects QoS 1 packet ids to acknowledge."""

    def __init__(self, collect_ids: bool = False, protocol: int = 4) -> None:
        self.written = 0
        self.wrote = asyncio.Event()
        self.ids: list[int] | None = [] if collect_ids else None
        self._decoder = ClientDecoder(1 << 20) if protocol == 5 else Decoder(1 << 20, server_side=False)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.wrote.set()
        if self.ids is not None:
            self._decoder.feed(data)
            while (packet := self._decoder.next_packet()) is not None:
                if type(packet) is Publish and packet.packet_id is not None:
                    self.ids.append(packet.packet_id)

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(qos: int, messages: int, rounds: int, protocol: int = 4) -> list[float]:
    """CPU seconds per message of each round; ``protocol`` 5: both connections speak MQTT 5.0, no properties."""
    pack, pack_publish = (encode5, encode_publish5) if protocol == 5 else (encode, encode_publish)
    store, data = Path(tempfile.mkdtemp(prefix="fg-hot-nats-")), Path(tempfile.mkdtemp(prefix="fg-hot-gw-"))
    nats = NatsServer(store).start()
    settings = Settings.from_env(
        {},
        nats_url=nats.url,
        data_dir=data,
        admin_key="fga_bench_" + secrets.token_urlsafe(24),
        secret_key=secrets.token_urlsafe(32),
        billing_enabled=False,
        log_level="warning",
        outbound_queue_size=100_000,
        publish_timeout_seconds=60.0,  # under valgrind JetStream's acknowledgements arrive late, not lost
    )
    try:
        async with running_services(settings) as services:
            ctx = MqttContext(services, await MqttStore.open(services.bus), MqttConfig.from_settings(settings))
            await services.accounts.create_user("u1")
            token, _ = services.tokens.issue(Namespace("u1", "app"), ttl=3600)
            sub_wire, pub_wire = MemoryWire(collect_ids=qos > 0, protocol=protocol), MemoryWire(protocol=protocol)
            sub, pub = MqttConnection(ctx, sub_wire, "sub"), MqttConnection(ctx, pub_wire, "pub")
            for conn, wire, client_id in ((sub, sub_wire, "sub"), (pub, pub_wire, "pub")):
                wire.wrote.clear()
                connect = Connect(client_id, True, 0, "Bearer", token.encode(), None, protocol_level=protocol)
                conn.data_received(pack(connect))
                await wire.wrote.wait()  # CONNACK
            sub_wire.wrote.clear()
            sub.data_received(pack(Subscribe(1, (("t/x", qos),))))
            await sub_wire.wrote.wait()  # SUBACK
            ids = [(i % 60_000) + 1 if qos else None for i in range(BATCH)]
            chunk = b"".join(pack_publish("t/x", PAYLOAD, qos, packet_id=i) for i in ids)
            # MQTT 5: at most the Receive Maximum the gateway announced unacknowledged [MQTT-3.3.4-7]
            ahead = RECEIVE_MAXIMUM - BATCH if protocol == 5 else 2 * BATCH
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)  # as serve() does
            results = []
            for _ in range(rounds):
                delivered = sub_wire.written
                started = time.process_time()
                for _ in range(messages // BATCH):
                    pub.data_received(chunk)
                    await asyncio.sleep(0)
                    # the reader handles a read in slices: what it has not decoded yet is unacknowledged too
                    while len(pub._acks) > ahead or pub._decoder.buffered:  # noqa: ASYNC110 - yield until JetStream acknowledged more
                        await asyncio.sleep(0)
                    if sub_wire.ids:
                        sub.data_received(b"".join(encode(PubAck(i)) for i in sub_wire.ids))
                        sub_wire.ids.clear()
                while pub._acks or sub_wire.written - delivered < messages * len(chunk) // BATCH:
                    await asyncio.sleep(0.001)
                    for conn in (pub, sub):
                        if conn._close_reason is not None:  # fail instead of waiting for ever
                            raise RuntimeError(f"{conn.peer} closed: {conn._close_reason}")
                    if sub_wire.ids:
                        sub.data_received(b"".join(encode(PubAck(i)) for i in sub_wire.ids))
                        sub_wire.ids.clear()
                results.append((time.process_time() - started) / messages)
            return results
    finally:
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


VALGRIND_TIMEOUT = 1800  # seconds; a round of 25,000 messages takes a few minutes under callgrind


def instructions(qos: int, messages: int, protocol: int = 4) -> int:
    """Instructions this script executes for ``messages`` messages in one round, counted by callgrind."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--qos", str(qos), "--messages", str(messages), "--rounds", "1",
        "--protocol", str(protocol),
    ]  # fmt: skip
    # Its own process group: on a timeout the run's private nats-server goes with it.
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as run:
        try:
            output = run.communicate(timeout=VALGRIND_TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            raise RuntimeError(f"valgrind did not finish {messages} messages within {VALGRIND_TIMEOUT} s") from None
    if run.returncode:
        raise RuntimeError(f"valgrind run failed ({run.returncode}):\n" + output[-2000:])
    found = re.search(r"Collected : (\d+)", output)
    if found is None:
        raise RuntimeError("valgrind printed no instruction count:\n" + output[-2000:])
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="publish and subscribe QoS")
    parser.add_argument("--messages", type=int, default=100_000, help="per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--protocol", type=int, choices=(4, 5), default=4, help="MQTT 3.1.1 (4) or 5.0 (5)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    args = parser.parse_args(argv)
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
        small, large = instructions(args.qos, 5_000, args.protocol), instructions(args.qos, 25_000, args.protocol)
        print(f"| v{args.protocol} QoS {args.qos} | {(large - small) / 20_000:,.0f} instructions per message |")
        return 0
    import uvloop

    results = sorted(uvloop.run(measure(args.qos, args.messages, args.rounds, args.protocol)))
    best, median = results[0] * 1e6, results[len(results) // 2] * 1e6
    print(
        f"| v{args.protocol} QoS {args.qos} | best {best:.2f} µs | median {median:.2f} µs CPU per message ({args.rounds} rounds) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
