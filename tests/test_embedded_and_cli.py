"""The embedded nats-server child, the generated admin key, and the CLI twins of the admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import psutil

from flowgate.embedded_nats import nats_cpus
from gateway.settings import Settings
from tests.harness import ROOT, Gateway


def test_embedded_nats_lifecycle_and_generated_admin_key(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(None, env={"FLOWGATE_ADMIN_KEY": ""})
    children = [p for p in psutil.Process(gw.pid).children() if "nats-server" in p.name()]
    assert len(children) == 1
    connections = children[0].net_connections(kind="inet")
    assert connections and all(c.laddr.ip == "127.0.0.1" for c in connections if c.status == psutil.CONN_LISTEN)
    assert (gw.data_dir / "nats").is_dir()
    # the cores one worker leaves (or what the environment set)
    cores = os.environ.get("GOMAXPROCS") or str(max(1, len(os.sched_getaffinity(0)) - 1))
    assert children[0].environ()["GOMAXPROCS"] == cores
    admin_key = (gw.data_dir / "admin.key").read_text().strip()
    assert any(admin_key in line for line in gw.log), "generated admin key is printed once at first start"
    gw.admin_key = admin_key
    assert httpx.get(gw.base_url + "/readyz").status_code == 200

    env = gw.environment()
    env.pop("FLOWGATE_ADMIN_KEY")
    cli = [sys.executable, "-m", "flowgate.cli"]
    created = subprocess.run(
        [*cli, "users", "create", "dave"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert created.returncode == 0, created.stderr
    key = subprocess.run(
        [*cli, "keys", "create", "dave", "--name", "ci"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert key.returncode == 0, key.stderr
    api_key = json.loads(key.stdout)["key"]
    token = httpx.post(gw.base_url + "/token", headers={"X-API-Key": api_key}, json={"app": "x"}).json()["token"]
    answer = httpx.post(
        gw.base_url + "/api/v1/publish", headers={"Authorization": f"Bearer {token}"}, json={"topic": "t", "message": 1}
    )
    assert answer.status_code == 200 and answer.json()["topic"] == "dave_x_t"

    child = children[0]
    gw.stop()
    child.wait(10)
    assert not child.is_running()

    # the embedded store is under the data dir: state survives a restart; the admin key is not printed again
    printed_before = len(gw.log)
    gw.start()
    assert not any(admin_key in line for line in gw.log[printed_before:])
    assert httpx.post(gw.base_url + "/token", headers={"X-API-Key": api_key}, json={"app": "x"}).status_code == 200


def test_embedded_nats_does_not_outlive_a_killed_gateway(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(None, env={"FLOWGATE_NATS_CPUS": "3"})
    (child,) = [p for p in psutil.Process(gw.pid).children() if "nats-server" in p.name()]
    assert child.environ()["GOMAXPROCS"] == "3"
    assert gw.process is not None
    gw.process.kill()
    gw.process.wait(10)
    child.wait(10)  # raises psutil.TimeoutExpired if the child stayed behind
    assert not child.is_running()


def test_the_embedded_nats_server_gets_the_cores_the_workers_leave() -> None:
    assert nats_cpus(Settings.from_env({}), 2) == 1
    assert nats_cpus(Settings.from_env({}), 8) == 7
    assert nats_cpus(Settings.from_env({"FLOWGATE_WORKERS": "3"}), 8) == 5
    assert nats_cpus(Settings.from_env({}), 1) == 1  # no core left: all of them, one
    assert nats_cpus(Settings.from_env({"FLOWGATE_WORKERS": "4"}), 4) == 4  # workers on every core: all of them
    assert nats_cpus(Settings.from_env({"FLOWGATE_WORKERS": "20"}), 16) == 16
    assert nats_cpus(Settings.from_env({"FLOWGATE_NATS_CPUS": "6", "FLOWGATE_WORKERS": "4"}), 4) == 6  # as told
