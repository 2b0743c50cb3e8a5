"""Accounts, API keys, POST /token and the error shape, against the real gateway and NATS."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import Gateway


@pytest.fixture
def http(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, timeout=10)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) >= {"code", "message"} and body["message"]
    if code == "bad_request":
        assert body["code"] in ("bad_request", "invalid_name")  # InvalidName is a BadRequest
    elif code:
        assert body["code"] == code


def test_token_from_every_credential_place(gateway: Gateway, http: httpx.Client) -> None:
    user_id, key = gateway.new_user()
    places: tuple[dict[str, Any], ...] = (
        {"headers": {"Authorization": f"Bearer {key}"}, "json": {"app": "myapp"}},
        {"headers": {"X-API-Key": key}, "json": {"app": "myapp"}},
        {"json": {"app": "myapp", "api_key": key}},
    )
    for kwargs in places:
        for path in ("/token", "/token/"):
            response = http.post(path, **kwargs)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["token_type"] == "Bearer" and body["user_id"] == user_id and body["app"] == "myapp"
            assert body["topic_prefix"] == f"{user_id}_myapp_" and body["expires_in"] == 900
    assert http.post("/token", headers={"X-API-Key": key}, json={"app": "a", "ttl": 60}).json()["expires_in"] == 60


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"app": "Bad_App"}, 400),
        ({"app": "ok", "ttl": "long"}, 400),
        ({"app": "ok", "ttl": 10**9}, 400),
        ({"app": "ok", "permissions": {"publish": {"allow": "x"}}}, 400),
        ([1, 2], 400),
    ],
)
def test_token_rejects_bad_requests(gateway: Gateway, http: httpx.Client, body: object, status: int) -> None:
    _, key = gateway.new_user()
    assert_error(
        http.post("/token", headers={"X-API-Key": key}, json=body), status, "bad_request" if status == 400 else None
    )


def test_token_rejects_bad_credentials(gateway: Gateway, http: httpx.Client) -> None:
    user_id, key = gateway.new_user()
    assert_error(http.post("/token", json={"app": "a"}), 401, "unauthorized")
    assert_error(http.post("/token", headers={"X-API-Key": "fgk_0000000000000000_" + "x" * 43}, json={}), 401)
    assert_error(http.post("/token", headers={"X-API-Key": key[:-1] + ("A" if key[-1] != "A" else "B")}, json={}), 401)
    assert_error(http.post("/token", headers={"X-API-Key": "garbage"}, json={}), 401)
    assert_error(http.post("/token", content=b"{not json", headers={"X-API-Key": key}), 400)
    # a disabled user cannot get tokens; enabling restores it
    assert gateway.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"disabled": True}).status_code == 200
    assert_error(http.post("/token", headers={"X-API-Key": key}, json={}), 403, "forbidden")
    assert gateway.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"disabled": False}).status_code == 200
    assert http.post("/token", headers={"X-API-Key": key}, json={}).status_code == 200


def test_revoked_key_stops_issuing_tokens_at_once(gateway: Gateway, http: httpx.Client) -> None:
    user_id, key = gateway.new_user()
    key_id = key.split("_")[1]
    assert http.post("/token", headers={"X-API-Key": key}, json={}).status_code == 200
    assert gateway.admin("DELETE", f"/api/v1/admin/users/{user_id}/keys/{key_id}").status_code == 204
    assert_error(http.post("/token", headers={"X-API-Key": key}, json={}), 401)
    assert_error(gateway.admin("DELETE", f"/api/v1/admin/users/{user_id}/keys/{key_id}"), 404, "not_found")


def test_admin_user_lifecycle(gateway: Gateway, http: httpx.Client) -> None:
    assert_error(http.get("/api/v1/admin/users"), 401)
    assert_error(http.get("/api/v1/admin/users", headers={"Authorization": "Bearer wrong-admin-key-xxxx"}), 401)
    created = gateway.admin("POST", "/api/v1/admin/users", json={"user_id": "carol", "plan": "pro"})
    assert created.status_code == 201 and created.json()["plan"] == "pro"
    assert_error(gateway.admin("POST", "/api/v1/admin/users", json={"user_id": "carol"}), 409, "conflict")
    assert_error(gateway.admin("POST", "/api/v1/admin/users", json={"user_id": "Not Valid"}), 400, "bad_request")
    assert_error(gateway.admin("POST", "/api/v1/admin/users", json={"user": "x"}), 400, "bad_request")
    assert gateway.admin("GET", "/api/v1/admin/users/carol/keys").json() == {"keys": []}
    assert "carol" in [u["user_id"] for u in gateway.admin("GET", "/api/v1/admin/users").json()["users"]]
    assert gateway.admin("PATCH", "/api/v1/admin/users/carol", json={"plan": "free"}).json()["plan"] == "free"
    assert gateway.admin("GET", "/api/v1/admin/users/carol").json()["plan"] == "free"
    key = gateway.admin("POST", "/api/v1/admin/users/carol/keys", json={"name": "ci"}).json()
    assert set(key) == {"id", "name", "key", "created_at", "access_key_id", "secret_access_key"}
    assert key["key"].startswith("fgk_") and key["access_key_id"] == "FGAK" + key["id"].upper()
    listed = gateway.admin("GET", "/api/v1/admin/users/carol/keys").json()["keys"]
    assert listed == [
        {"id": key["id"], "name": "ci", "created_at": key["created_at"], "access_key_id": key["access_key_id"]}
    ]
    assert gateway.admin("DELETE", "/api/v1/admin/users/carol").status_code == 204
    assert_error(gateway.admin("GET", "/api/v1/admin/users/carol"), 404)
    assert_error(http.post("/token", headers={"X-API-Key": key["key"]}, json={}), 401)


def test_users_manage_their_own_keys(gateway: Gateway, http: httpx.Client) -> None:
    _, token = gateway.user_token()
    _, other_key = gateway.new_user()
    auth = {"Authorization": f"Bearer {token}"}
    assert_error(http.get("/api/v1/keys"), 401)
    created = http.post("/api/v1/keys", headers=auth, json={"name": "laptop"})
    assert created.status_code == 201
    new_key = created.json()["key"]
    listed = http.get("/api/v1/keys", headers=auth).json()["keys"]
    assert {k["name"] for k in listed} == {"test", "laptop"} and all("key" not in k for k in listed)
    assert http.post("/token", headers={"X-API-Key": new_key}, json={}).status_code == 200
    # nobody deletes another user's key
    other_id = other_key.split("_")[1]
    assert_error(http.delete(f"/api/v1/keys/{other_id}", headers=auth), 404)
    assert http.post("/token", headers={"X-API-Key": other_key}, json={}).status_code == 200
    assert http.delete(f"/api/v1/keys/{created.json()['id']}", headers=auth).status_code == 204
    assert_error(http.post("/token", headers={"X-API-Key": new_key}, json={}), 401)


def test_errors_have_one_shape(gateway: Gateway, http: httpx.Client) -> None:
    assert_error(http.get("/no/such/route"), 404)
    assert_error(http.get("/api/v1/publish"), 405)
    assert_error(http.post("/api/v1/publish", json={"topic": "a", "message": 1}), 401, "unauthorized")
    assert_error(http.post("/api/v1/publish", headers={"Authorization": "Bearer x.y.z"}, json={}), 401)


def test_health_docs_and_metrics(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["status"] == "ready"
    schema = http.get("/openapi.json").json()
    for path in ("/token", "/api/v1/publish", "/api/v1/subscribe", "/api/v1/admin/users"):
        assert path in schema["paths"]
    assert http.get("/docs").status_code == 200
    assert b"flowgate_messages_published" in http.get("/metrics").content
