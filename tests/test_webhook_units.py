"""The pure parts of webhooks and triggers: signatures both ways, Retry-After, payload kinds, definitions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

import pytest
import standardwebhooks
from standardwebhooks.webhooks import WebhookVerificationError

from gateway.errors import BadRequest, Unauthorized
from gateway.payload import Kind
from gateway.topics import Namespace
from gateway.triggers.service import payload_of
from gateway.triggers.verification import Scheme, verify
from gateway.webhooks.client import ClientError, Response, WebhookClient
from gateway.webhooks.dispatcher import retry_after
from gateway.webhooks.records import Webhook
from gateway.webhooks.service import Webhooks
from gateway.webhooks.signing import new_secret, secret_key, sign

NOW = 1_800_000_000
NS = Namespace("alice", "app")


def test_our_signature_verifies_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    body = b'{"topic":"a","data":1}'
    headers = sign(secret_key(secret), "msg_7", int(time.time()), body)  # the package checks against its clock
    assert headers["webhook-signature"].startswith("v1,")
    checker = standardwebhooks.Webhook(secret)
    checker.verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        checker.verify(body + b" ", headers)


def test_standard_webhooks_triggers_check_signature_and_tolerance() -> None:
    secret = new_secret()
    body = b"hello"
    headers = sign(secret_key(secret), "m1", NOW, body)
    assert verify(Scheme.STANDARD_WEBHOOKS, secret, headers, body, NOW + 10) == "m1"
    for bad_headers, bad_body, now in (
        (headers, b"hellO", NOW),  # tampered
        (headers, body, NOW + 301),  # replayed after the tolerance
        ({**headers, "webhook-signature": "v1,AAAA"}, body, NOW),
        ({k: v for k, v in headers.items() if k != "webhook-id"}, body, NOW),
    ):
        with pytest.raises(Unauthorized):
            verify(Scheme.STANDARD_WEBHOOKS, secret, bad_headers, bad_body, now)


def test_github_and_stripe_schemes() -> None:
    body = b'{"id":"evt_9"}'
    github = "sha256=" + hmac.new(b"s3cret-gh", body, hashlib.sha256).hexdigest()
    assert (
        verify(Scheme.GITHUB, "s3cret-gh", {"x-hub-signature-256": github, "x-github-delivery": "d"}, body, NOW) == "d"
    )
    with pytest.raises(Unauthorized):
        verify(Scheme.GITHUB, "other-secret", {"x-hub-signature-256": github}, body, NOW)
    mac = hmac.new(b"whsec_x", f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    header = {"stripe-signature": f"t={NOW},v1=deadbeef,v1={mac}"}  # any v1 may match (secret rotation)
    assert verify(Scheme.STRIPE, "whsec_x", header, body, NOW + 299) == "evt_9"
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(Unauthorized):
            verify(Scheme.STRIPE, "whsec_x", header, body, now)
    assert verify(Scheme.NONE, "", {}, body, NOW) is None


def test_retry_after_in_seconds_or_as_a_date_only_on_429_and_503() -> None:
    def answer(status: int, value: str) -> Response:
        return Response(status, {"retry-after": value})

    assert retry_after(answer(429, "3"), NOW) == 3.0
    assert retry_after(answer(503, formatdate(NOW + 20, usegmt=True)), NOW) == pytest.approx(20, abs=1)
    assert retry_after(answer(500, "3"), NOW) is None
    assert retry_after(answer(429, "soon"), NOW) is None


def test_trigger_bodies_keep_their_type() -> None:
    assert payload_of("application/json; charset=utf-8", b'{"a":1}').kind is Kind.JSON
    assert payload_of("application/vnd.api+json", b"[1]").kind is Kind.JSON
    assert payload_of("text/plain", b"hi").kind is Kind.TEXT
    assert payload_of("text/plain", b"\xff\xfe").kind is Kind.BINARY
    assert payload_of("application/octet-stream", b"hi").kind is Kind.BINARY
    assert payload_of(None, b'{"a":1}').kind is Kind.JSON
    with pytest.raises(BadRequest):
        payload_of("application/json", b"{nope")


def test_webhook_definitions_are_checked() -> None:
    webhook = Webhook.new(NS, {"url": "https://example.com/h", "filter": "alice_app_orders/#"})
    assert webhook.filter == "orders/#" and webhook.secret.startswith("whsec_") and webhook.id.startswith("wh_")
    assert len(base64.b64decode(webhook.secret[6:])) == 24
    assert Webhook.decode(webhook.encode()) == webhook
    assert "secret" not in webhook.public() and "user_id" not in webhook.public()
    for document in (
        {"url": "https://example.com/h"},
        {"url": "https://example.com/h", "filter": "a", "nope": 1},
        {"url": "https://example.com/h", "filter": "a", "headers": {"webhook-id": "x"}},
        {"url": "https://example.com/h", "filter": "a", "headers": {"X-A": "b\r\nc"}},
        {"url": "https://example.com/h", "filter": "a", "secret": "whsec_short"},
        {"url": "https://example.com/h", "filter": "a", "max_age_seconds": 0},
        {"url": "https://example.com/h", "filter": "a", "paused": "yes"},
        {"url": "https://example.com/h", "filter": "a", "batch": {"max_messages": 0}},
        {"url": "https://example.com/h", "filter": "a", "batch": {"max_messages": 5, "max_wait_ms": -1}},
    ):
        with pytest.raises(BadRequest):
            Webhook.new(NS, document)


def test_a_webhook_consumer_takes_the_narrowest_single_subject() -> None:
    def subject(topic_filter: str) -> tuple[str, bool]:
        return Webhooks._subject(Webhook.new(NS, {"url": "https://example.com/", "filter": topic_filter}))

    assert subject("a/b") == ("fg.msg.alice.app.a.b", True)
    assert subject("a/+") == ("fg.msg.alice.app.a.*", True)
    assert subject("a/b/#") == ("fg.msg.alice.app.a.>", False)  # a/b and a/b/... under one subject
    assert subject("orders/#") == ("fg.msg.alice.app.>", False)
    assert subject("#") == ("fg.msg.alice.app.>", False)  # not exact: '#' must not match $ topics


async def scripted_server(answers: list[bytes | None]) -> tuple[asyncio.Server, list[bytes]]:
    """A raw TCP server answering each request with the next scripted bytes (None: close without answering)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(line for line in head.split(b"\r\n") if line.startswith(b"content-length")).split(b":")[1]
            )
            seen.append(head + await reader.readexactly(length))
            answer = answers.pop(0)
            if answer is None:
                break
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer.lower():
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


async def test_the_webhook_client_reads_every_framing_and_reconnects() -> None:
    server, seen = await scripted_server(
        [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nconnection: close\r\n\r\nuntil the end",  # a body ending with the connection
        ]
    )
    port = server.sockets[0].getsockname()[1]
    client = WebhookClient(timeout=5)
    try:
        url = f"http://127.0.0.1:{port}/hook?x=1"
        assert (await client.post(url, b"{}", {"content-type": "application/json"})).status_code == 200
        busy = await client.post(url, b"{}", {})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
        assert (await client.post(url, b"{}", {})).status_code == 204  # same connection, then closed by the server
        assert (await client.post(url, b"{}", {})).status_code == 202  # a new connection
        assert seen[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n") and seen[0].endswith(b"\r\n\r\n{}")
    finally:
        await client.close()
        server.close()


async def test_the_webhook_client_resends_once_when_an_idle_connection_was_closed() -> None:
    server, seen = await scripted_server([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", None])
    port = server.sockets[0].getsockname()[1]
    client = WebhookClient(timeout=5)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert (await client.post(url, b"1", {})).status_code == 200
        # the server drops the kept connection without answering: the client sends again on a new one,
        # which the script answers by closing too: now it is an error
        with pytest.raises(ClientError):
            await client.post(url, b"2", {})
        assert len(seen) == 2
    finally:
        await client.close()
        server.close()


async def test_the_webhook_client_times_out_and_refuses_garbage() -> None:
    server, _ = await scripted_server([b"NOT HTTP AT ALL\r\n\r\n"])
    port = server.sockets[0].getsockname()[1]
    client = WebhookClient(timeout=0.3)
    try:
        with pytest.raises(ClientError, match="malformed"):
            await client.post(f"http://127.0.0.1:{port}/", b"x", {})
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
        with pytest.raises(ClientError, match="timeout"):
            await client.post(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}/", b"x", {})
        silent.close()
    finally:
        await client.close()
        server.close()


async def test_the_webhook_client_verifies_tls_certificates(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    client = WebhookClient(timeout=5)
    try:
        with pytest.raises(ClientError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await client.post(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/", b"x", {})  # self-signed
    finally:
        await client.close()
        server.close()
