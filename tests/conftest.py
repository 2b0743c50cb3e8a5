"""Shared fixtures: one real NATS server and one real gateway for the session, more on demand."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Gateway, NatsServer, temp_dir


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    store = temp_dir("fg-nats-")
    server = NatsServer(store).start()
    yield server
    server.stop()
    shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway(nats_server: NatsServer) -> Iterator[Gateway]:
    data = temp_dir("fg-gw-")
    gw = Gateway(nats_server.url, data).start()
    yield gw
    gw.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    """Start extra gateways (own data dir) for restart, replica and outage tests; all stopped afterwards."""
    started: list[Gateway] = []
    dirs: list[Path] = []

    def make(nats_url: str | None, **kwargs: object) -> Gateway:
        data = temp_dir("fg-gw-")
        dirs.append(data)
        gw = Gateway(nats_url, data, **kwargs)  # type: ignore[arg-type]
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_nats() -> Iterator[Callable[[], NatsServer]]:
    """Private NATS servers for tests that stop and restart them."""
    servers: list[NatsServer] = []

    def make() -> NatsServer:
        server = NatsServer(temp_dir("fg-nats-")).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
        shutil.rmtree(server.store, ignore_errors=True)
