"""The Dockerfile and docker-compose.yml are valid and agree with the code (no Docker engine runs here)."""

from __future__ import annotations

import re
import tomllib

import yaml

from gateway.settings import Settings
from tests.harness import ROOT

SETTINGS = {row[0] for row in Settings.documentation()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_builds_the_package_and_runs_flowgate_serve() -> None:
    rows = dockerfile_instructions()
    known = {
        "FROM",
        "RUN",
        "WORKDIR",
        "COPY",
        "ENV",
        "USER",
        "VOLUME",
        "EXPOSE",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "CMD",
        "ARG",
        "LABEL",
    }
    assert all(keyword in known for keyword, _ in rows), rows
    assert rows[0][0] == "FROM"
    version = re.search(r"python:(\d+)\.(\d+)", rows[0][1])
    assert version and (int(version[1]), int(version[2])) >= (3, 11)
    copied = [rest.split()[0] for keyword, rest in rows if keyword == "COPY"]
    for path in copied:
        assert (ROOT / path).exists(), f"COPY {path}: missing"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:
        assert package.rstrip("*") in copied, f"package {package} is not copied into the image"
    env = " ".join(rest for keyword, rest in rows if keyword == "ENV")
    for name in re.findall(r"(FLOWGATE_[A-Z_]+)=", env):
        assert name in SETTINGS, name
    assert "FLOWGATE_HOST=0.0.0.0" in env
    assert {"8080", "1883"} <= set(" ".join(rest for k, rest in rows if k == "EXPOSE").split())
    assert ("CMD", '["flowgate", "serve"]') in rows
    assert any(k == "HEALTHCHECK" and "/readyz" in rest for k, rest in rows)
    assert any(k == "RUN" and "nats-server" in rest for k, rest in rows), "embedded mode needs nats-server in the image"


def test_compose_runs_gateway_on_a_jetstream_nats() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"nats", "gateway"}
    nats, gateway = services["nats"], services["gateway"]
    config_mount = next(v for v in nats["volumes"] if v.endswith("/etc/nats/nats.conf:ro"))
    config = (ROOT / config_mount.split(":")[0]).read_text()
    assert "jetstream" in config and "4222" in config
    assert gateway["build"] == "."
    assert gateway["depends_on"]["nats"]["condition"] == "service_healthy"
    env = gateway["environment"]
    assert env["FLOWGATE_NATS_URL"] == "nats://nats:4222"
    assert set(env) <= SETTINGS
    assert {"8080:8080", "1883:1883"} <= set(gateway["ports"])
    for name in ("nats-data", "gateway-data"):
        assert name in compose["volumes"]
