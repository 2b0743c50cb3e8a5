"""The HTTP dispatcher (protocols/http/fastpath.py): hot routes bypass FastAPI and answer as it would.

The in-process tests run the real app (``create_app``) on the session's NATS
server and record what reaches the FastAPI app behind the dispatcher, so each
one shows which path answered.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Match, Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from flowgate.app import create_app
from gateway.errors import PayloadTooLarge, Unavailable
from gateway.settings import Settings
from protocols.http import publish, queues
from protocols.http.deps import read_body
from protocols.http.fastpath import FastPath, QueueRouteTable
from protocols.http.status_metrics import ErrorCounter
from tests.billing_env import billing_env
from tests.harness import NatsServer

MAX_MESSAGE_BYTES = 1000
BODY_LIMIT = MAX_MESSAGE_BYTES * 6 + publish.JSON_OVERHEAD

# -- the queue route table against Starlette's router (no server) --------------------------------

API = queues.QueueApi(cast(Any, None), cast(Any, None), MAX_MESSAGE_BYTES)  # routing only: no handler runs
ROUTES = queues.routes(API)
TABLE = QueueRouteTable(API)


def starlette_choice(method: str, path: str) -> tuple[Any, dict[str, Any]] | None:
    """The endpoint and path parameters Starlette's router picks among ``queues.routes``: the first full match."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in ROUTES:
        assert isinstance(route, Route)
        match, child = route.matches(scope)
        if match is Match.FULL:
            return child["endpoint"], child["path_params"]
    return None


P = queues.PREFIX
QUEUE_PATHS = [
    P,
    P + "/",
    P + "/q",
    P + "/q/messages",
    P + "/a/b/messages",
    P + "//messages",
    P + "/messages",
    P + "/q/messages/",
    P + "/q/messages/batch",
    P + "/q/messages/batch-delete",
    P + "/q/messages/receive",
    P + "/q/messages/h-1",
    P + "/q/messages/messages/h",
    P + "/q/messages/receive/messages",
    P + "/messages/h",
    P + "/q/messages/a/b",
    P + "/q/purge",
    P + "/q/messages\n",
    P + "/q\n/messages",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@pytest.mark.parametrize(("method", "path"), list(itertools.product(METHODS, QUEUE_PATHS)))
def test_a_queue_route_taken_by_the_dispatcher_is_the_one_starlette_picks(method: str, path: str) -> None:
    fast = TABLE.match(method, path)
    if fast is not None:
        assert starlette_choice(method, path) == fast


@pytest.mark.parametrize(
    ("method", "path", "handler", "params"),
    [
        ("POST", P + "/q/messages", API.send_message, {"queue": "q"}),
        ("POST", P + "/a/b/messages", API.send_message, {"queue": "a/b"}),
        ("GET", P + "/q/messages", API.receive_messages, {"queue": "q"}),
        ("POST", P + "/q/messages/receive", API.receive_messages_post, {"queue": "q"}),
        ("POST", P + "/q/messages/batch", API.send_batch, {"queue": "q"}),
        ("POST", P + "/q/messages/batch-delete", API.delete_batch, {"queue": "q"}),
        ("DELETE", P + "/a/b/messages/h-1", API.delete_message, {"queue": "a/b", "receipt_handle": "h-1"}),
        ("PATCH", P + "/q/messages/h", API.change_visibility, {"queue": "q", "receipt_handle": "h"}),
    ],
)
def test_the_queue_message_routes_take_the_fast_path(method: str, path: str, handler: Any, params: Any) -> None:
    assert TABLE.match(method, path) == (handler, params)


# -- the request helper ----------------------------------------------------------------------------


def request_of(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    pending = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(pending)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers or []}, receive)


async def test_read_body_joins_chunks_and_stops_a_body_without_length_at_the_limit() -> None:
    chunks: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]
    assert await read_body(request_of(chunks), 4) == b"abcd"
    endless = [{"type": "http.request", "body": b"x" * 3, "more_body": True}] * 2 + [{"type": "never read"}]
    with pytest.raises(PayloadTooLarge):
        await read_body(request_of(endless), 5)


async def test_read_body_refuses_a_declared_length_before_reading() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_body(request_of([], [(b"content-length", b"6")]), 5)  # receive is never called
    with pytest.raises(ClientDisconnect):
        await read_body(request_of([{"type": "http.disconnect"}]), 5)


# -- the real app in process -----------------------------------------------------------------------


@dataclass
class Recording:
    """Stands in for the FastAPI app behind the dispatcher and notes the HTTP requests that reach it."""

    app: Any
    seen: list[tuple[str, str]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class App:
    client: TestClient
    fast: FastPath
    recording: Recording
    admin_key: str

    def token(self, plan: str = "free", **body: Any) -> str:
        admin = {"Authorization": f"Bearer {self.admin_key}"}
        user = "u" + secrets.token_hex(5)
        created = self.client.post("/api/v1/admin/users", json={"user_id": user, "plan": plan}, headers=admin)
        assert created.status_code == 201, created.text
        key = self.client.post(f"/api/v1/admin/users/{user}/keys", json={"name": "t"}, headers=admin).json()["key"]
        answer = self.client.post("/token", json={"app": "app", **body}, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    @property
    def services(self) -> Any:
        return self.fast.app.state.services


@pytest.fixture(scope="module")
def app(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    data: Path = tmp_path_factory.mktemp("fastpath")
    admin_key = "fga_test_" + secrets.token_urlsafe(24)
    settings = Settings.from_env(
        billing_env(data),
        nats_url=nats_server.url,
        data_dir=data,
        admin_key=admin_key,
        secret_key=secrets.token_urlsafe(32),
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    outer = create_app(settings)  # the error counter around the fast path around FastAPI
    assert isinstance(outer, ErrorCounter)
    fast = outer.app
    assert isinstance(fast, FastPath)
    recording = Recording(fast.app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast, "app", recording)  # the stand-in for FastAPI
        with TestClient(outer) as client:
            yield App(client, fast, recording, admin_key)


@pytest.fixture
def token(app: App) -> str:
    return app.token()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def test_publish_answers_without_reaching_fastapi(app: App, token: str) -> None:
    app.recording.seen.clear()
    answer = app.client.post("/api/v1/publish", json={"topic": "t", "message": "hello"}, headers=auth(token))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"topic", "seq", "duplicate"} and body["topic"].endswith("_app_t") and not body["duplicate"]
    again = {**auth(token), "Idempotency-Key": "k1"}
    first = app.client.post("/api/v1/publish", json={"topic": "t", "message": "once"}, headers=again).json()
    second = app.client.post("/api/v1/publish", json={"topic": "t", "message": "once"}, headers=again).json()
    assert (second["seq"], second["duplicate"]) == (first["seq"], True)
    assert app.recording.seen == []


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{not json"}, 400, "bad_request"),
        ({"json": {"topic": 1, "message": "m"}}, 400, "bad_request"),
        ({"json": {"topic": "a/+", "message": "m"}}, 400, "invalid_name"),
        ({"json": {"topic": "t", "message": "m"}, "headers": {"Idempotency-Key": "k" * 201}}, 400, "bad_request"),
        ({"json": {"topic": "t", "message": "x" * (MAX_MESSAGE_BYTES + 1)}}, 413, "payload_too_large"),
        ({"content": b" " * (BODY_LIMIT + 1)}, 413, "payload_too_large"),
    ],
)
def test_publish_errors_keep_their_shape(app: App, token: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    headers = {**auth(token), "Content-Type": "application/json", **kwargs.pop("headers", {})}
    app.recording.seen.clear()
    error_of(app.client.post("/api/v1/publish", headers=headers, **kwargs), status, code)
    assert app.recording.seen == []


def test_publish_without_a_valid_token_is_401_and_outside_the_permissions_403(app: App) -> None:
    message = {"topic": "admin", "message": 1}
    error_of(app.client.post("/api/v1/publish", json=message), 401, "unauthorized")
    error_of(app.client.post("/api/v1/publish", json=message, headers=auth("not-a-jwt")), 401, "unauthorized")
    narrow = app.token(permissions={"publish": {"allow": ["sensors/#"]}})
    error_of(app.client.post("/api/v1/publish", json=message, headers=auth(narrow)), 403, "forbidden")


def test_a_rate_limited_publish_is_429_with_its_headers(app: App) -> None:
    token = app.token(plan="slow")  # burst 5, then one message per 20 s
    answers = [
        app.client.post("/api/v1/publish", json={"topic": "t", "message": i}, headers=auth(token)) for i in range(6)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    error = error_of(answers[5], 429, "rate_limited")
    assert error["limit"] == "rate" and error["retry_after"] > 0
    headers = answers[5].headers
    assert headers["RateLimit-Limit"] == "5" and headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 20


def test_bus_unavailable_is_503_and_an_unexpected_error_500_logged(
    app: App, token: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure: BaseException = Unavailable("message bus unavailable; retry shortly")

    async def failing(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(app.services.publisher, "publish", failing)
    message = {"topic": "t", "message": "m"}
    error = error_of(app.client.post("/api/v1/publish", json=message, headers=auth(token)), 503, "unavailable")
    assert error["message"] == "message bus unavailable; retry shortly"
    failure = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="flowgate.http"):
        error = error_of(app.client.post("/api/v1/publish", json=message, headers=auth(token)), 500, "internal")
    assert error == {"code": "internal", "message": "internal server error"}
    [record] = [r for r in caplog.records if r.name == "flowgate.http" and r.levelno == logging.ERROR]
    assert record.exc_info is not None and record.exc_info[1] is failure


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_another_method_on_the_publish_path_is_405_from_fastapi(app: App, token: str, method: str) -> None:
    app.recording.seen.clear()
    answer = app.client.request(method, "/api/v1/publish", headers=auth(token))
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert answer.headers["content-type"] == "application/json"
    if method != "HEAD":
        error_of(answer, 405, "method_not_allowed")
    assert app.recording.seen == [(method, "/api/v1/publish")]


def test_queue_messages_take_the_fast_path_and_the_rest_fastapi(app: App, token: str) -> None:
    path = P + "/jobs/today"
    app.recording.seen.clear()
    assert app.client.put(path, json={"visibility_timeout": 60}, headers=auth(token)).status_code == 201
    sent = app.client.post(path + "/messages", json={"body": "work"}, headers=auth(token))
    assert sent.status_code == 200 and set(sent.json()) == {"message_id", "md5_of_body", "seq"}
    batch = {"entries": [{"id": "a", "body": "one"}, {"id": "b", "body": ""}]}
    answer = app.client.post(path + "/messages/batch", json=batch, headers=auth(token)).json()
    assert [s["id"] for s in answer["successful"]] == ["a"] and answer["failed"][0]["code"] == "bad_request"
    got = app.client.get(path + "/messages", params={"max": 10}, headers=auth(token)).json()["messages"]
    assert sorted(m["body"] for m in got) == ["one", "work"]
    handle = got[0]["receipt_handle"]
    assert app.client.delete(f"{path}/messages/{handle}", headers=auth(token)).status_code == 204
    assert app.recording.seen == [("PUT", path)]
    error_of(app.client.post(path + "/messages", json={"body": "x"}), 401, "unauthorized")
    error_of(app.client.post(path + "/messages", json={"nobody": "x"}, headers=auth(token)), 400, "bad_request")
    error_of(app.client.delete(f"{path}/messages/garbage", headers=auth(token)), 400, "invalid_receipt_handle")
    huge = app.client.post(path + "/messages", content=b" " * (BODY_LIMIT + 1), headers=auth(token))
    error_of(huge, 413, "payload_too_large")
    assert app.recording.seen == [("PUT", path)]


def test_openapi_still_documents_the_fast_routes(app: App) -> None:
    paths = app.client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/v1/publish"]
    assert {"post", "get"} <= set(paths[P + "/{queue}/messages"])
    assert {"delete", "patch"} <= set(paths[P + "/{queue}/messages/{receipt_handle}"])
    assert "/token" in paths
    assert app.client.get("/docs").status_code == 200
