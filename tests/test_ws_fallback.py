"""The /ws endpoint through plain ASGI sends: the path taken when the server offers no direct writer.

Starlette's in-process TestClient speaks ASGI without the ``flowgate.direct``
extension, so the same protocol must work frame by frame through ``send``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.testclient import TestClient

from flowgate.app import create_app
from gateway.settings import Settings
from tests.harness import NatsServer


def test_ws_over_plain_asgi(nats_server: NatsServer, tmp_path: Path) -> None:
    admin_key = "fga_test_" + secrets.token_urlsafe(24)
    settings = Settings.from_env(
        {}, nats_url=nats_server.url, data_dir=tmp_path, admin_key=admin_key, secret_key=secrets.token_urlsafe(32)
    )
    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {admin_key}"}
        user = "u" + secrets.token_hex(5)
        assert client.post("/api/v1/admin/users", json={"user_id": user}, headers=admin).status_code == 201
        key = client.post(f"/api/v1/admin/users/{user}/keys", json={"name": "t"}, headers=admin).json()["key"]
        token = client.post("/token", json={"app": "app"}, headers={"Authorization": f"Bearer {key}"}).json()["token"]
        with client.websocket_connect(f"/ws?token={token}") as ws:
            ws.send_json({"action": "subscribe", "topic": "fallback/#", "id": 1})
            assert ws.receive_json() == {"action": "ack", "id": 1, "topic": "fallback/#"}
            ws.send_json({"action": "publish", "topic": "fallback/a", "message": {"k": "v"}, "id": 2})
            frames = [ws.receive_json(), ws.receive_json()]
            ack = next(f for f in frames if f["action"] == "ack")
            message = next(f for f in frames if f["action"] == "message")
            assert (message["topic"], message["data"], message["seq"]) == ("fallback/a", {"k": "v"}, ack["seq"])
            ws.send_text("{broken")
            assert ws.receive_json()["code"] == 400
