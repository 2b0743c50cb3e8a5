"""``flowgate serve`` with FLOWGATE_WORKERS=2: a supervisor, one embedded NATS, two workers on the same ports.

Both workers accept on the HTTP and MQTT ports (the kernel spreads connections), a message published
through one reaches subscribers on both, a worker killed with SIGKILL is restarted, and SIGTERM stops
the workers first and NATS last.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest

from protocols.mqtt.packets import Publish
from tests.harness import Gateway, temp_dir
from tests.mqtt_client import RawClient

pytestmark = pytest.mark.timeout(90)


def workers_of(gw: Gateway) -> list[psutil.Process]:
    return [p for p in psutil.Process(gw.pid).children() if "nats-server" not in p.name()]


def listening_ports(process: psutil.Process) -> set[int]:
    return {c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def both_workers_listen(gw: Gateway) -> bool:
    try:
        workers = workers_of(gw)
        return len(workers) == 2 and all({gw.http_port, gw.mqtt_port} <= listening_ports(w) for w in workers)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def workers_gateway() -> Iterator[Gateway]:
    env = {"FLOWGATE_WORKERS": "2", "FLOWGATE_SHUTDOWN_GRACE": "2"}
    gw = Gateway(None, temp_dir("fg-workers-"), env=env).start(timeout=60)
    wait_for(lambda: both_workers_listen(gw), 60, "both workers listening")
    yield gw
    gw.stop()
    shutil.rmtree(gw.data_dir, ignore_errors=True)


async def test_two_workers_share_the_ports_and_are_one_system(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    children = psutil.Process(gw.pid).children()
    assert sorted("nats-server" in p.name() for p in children) == [False, False, True]
    _, token = gw.user_token()
    clients = [(await RawClient.connect(gw.mqtt_port, token))[0] for _ in range(12)]
    for client in clients:
        await client.subscribe(("news", 1))
    # the kernel spread the connections over both workers
    holders = {
        w.pid
        for w in workers_of(gw)
        for c in w.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == gw.mqtt_port
    }
    assert len(holders) == 2
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            gw.base_url + "/api/v1/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": "news", "message": "to all"},
        )
    assert answer.status_code == 200, answer.text
    for client in clients:
        packet = await client.expect(Publish)
        assert packet.payload == b"to all"
        await client.acknowledge(packet)
        await client.close()


async def test_a_session_taken_over_across_workers(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    _, token = gw.user_token()
    holders: set[int] = set()
    previous: RawClient | None = None
    for attempt in range(20):  # the kernel picks the worker: go on until the takeovers crossed workers
        client, connack = await RawClient.connect(gw.mqtt_port, token, client_id="roamer", clean=False)
        assert connack.return_code == 0
        local = client.writer.get_extra_info("sockname")[1]
        holders |= {
            w.pid
            for w in workers_of(gw)
            for c in w.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == local
        }
        if previous is not None:
            assert await previous.closed_by_server(10), "the older connection is closed on whichever worker"
            await previous.close()
        previous = client
        if len(holders) == 2 and attempt >= 2:
            break
    assert previous is not None
    await previous.close()
    assert len(holders) == 2


def test_a_crashed_worker_is_restarted(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    victim, survivor = workers_of(gw)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    # the other worker serves meanwhile
    assert httpx.get(gw.base_url + "/readyz", timeout=5).status_code == 200
    wait_for(lambda: both_workers_listen(gw) and victim.pid not in {w.pid for w in workers_of(gw)}, 60, "restart")
    assert survivor.pid in {w.pid for w in workers_of(gw)}
    assert any("restarting" in line and str(victim.pid) in line for line in gw.log)


def test_sigterm_stops_the_workers_then_nats(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    wait_for(lambda: both_workers_listen(gw), 60, "both workers listening")
    children = psutil.Process(gw.pid).children()
    assert gw.process is not None
    started = time.monotonic()
    gw.process.send_signal(signal.SIGTERM)
    code = gw.process.wait(30)
    took = time.monotonic() - started
    assert code == 0, "".join(gw.log[-20:])
    assert took < 2 + 5, f"stopping took {took:.1f} s"
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    finished = [line for line in gw.log if "Finished server process" in line]
    assert len(finished) >= 2  # the workers shut down cleanly (then NATS, which the supervisor owns)
