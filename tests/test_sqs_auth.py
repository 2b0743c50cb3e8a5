"""SigV4 on the SQS endpoint: every authentication failure with AWS's code and status, and the
billing guard's limits as AWS-style errors that the SDKs treat sensibly (throttling retried, quota not).

Requests are signed by botocore's own ``SigV4Auth`` (and boto3 clients); the
gateway runs with the billing tests' plans.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import httpx
import nats
import orjson
import pytest
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.billing_env import billing_gateway
from tests.harness import Gateway, NatsServer
from tests.sqs_clients import AwsUser, aws_user, sqs_client

JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
FORM_BODY = b"Action=ListQueues&Version=2012-11-05"


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    with billing_gateway(nats_server.url, "fg-gw-sqs-auth-") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def user(gw: Gateway) -> AwsUser:
    return aws_user(gw)


def signed(
    gw: Gateway,
    access_key_id: str,
    secret: str,
    *,
    body: bytes = b"{}",
    headers: dict[str, str] = JSON_HEADERS,
    region: str = "default",
    when: datetime.datetime | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
    path: str = "/",
) -> AWSRequest:
    request = AWSRequest(method="POST", url=gw.base_url + path, data=body, headers=dict(headers))
    signer = botocore.auth.SigV4Auth(Credentials(access_key_id, secret), "sqs", region)
    if when is not None:
        assert monkeypatch is not None
        with monkeypatch.context() as patch:
            patch.setattr(botocore.auth, "get_current_datetime", lambda: when)  # the client's clock is off
            signer.add_auth(request)
    else:
        signer.add_auth(request)
    return request


def send(request: AWSRequest) -> httpx.Response:
    return httpx.post(request.url, content=request.body, headers=dict(request.headers.items()), timeout=10)


def json_error(response: httpx.Response) -> tuple[int, str, str]:
    """(status, __type's shape, x-amzn-query-error code)"""
    return (
        response.status_code,
        orjson.loads(response.content)["__type"].rsplit("#", 1)[1],
        response.headers["x-amzn-query-error"].split(";")[0],
    )


def xml_code(response: httpx.Response) -> tuple[int, str]:
    text = response.text
    assert text.startswith('<?xml version="1.0"?><ErrorResponse'), text
    return response.status_code, text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def test_a_good_signature_passes(gw: Gateway, user: AwsUser) -> None:
    response = send(signed(gw, user.access_key_id, user.secret_access_key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-amz-json-1.0"
    form = send(signed(gw, user.access_key_id, user.secret_access_key, body=FORM_BODY, headers=FORM_HEADERS))
    assert form.status_code == 200 and "<ListQueuesResponse" in form.text


def test_missing_signature(gw: Gateway) -> None:
    response = httpx.post(gw.base_url + "/", content=b"{}", headers=JSON_HEADERS)
    assert json_error(response) == (403, "MissingAuthenticationToken", "MissingAuthenticationToken")
    assert xml_code(httpx.post(gw.base_url + "/", content=FORM_BODY, headers=FORM_HEADERS)) == (
        403,
        "MissingAuthenticationToken",
    )
    anonymous = boto3.client(
        "sqs", endpoint_url=gw.base_url, region_name="default", config=Config(signature_version=UNSIGNED)
    )
    with pytest.raises(ClientError) as excinfo:
        anonymous.list_queues()
    assert excinfo.value.response["Error"]["Code"] == "MissingAuthenticationToken"


def test_wrong_secret_and_tampering(gw: Gateway, user: AwsUser) -> None:
    wrong = send(signed(gw, user.access_key_id, "x" * 40))
    assert json_error(wrong) == (403, "SignatureDoesNotMatch", "SignatureDoesNotMatch")
    request = signed(gw, user.access_key_id, user.secret_access_key)
    tampered = httpx.post(  # the body changed after signing
        request.url, content=b'{"QueueNamePrefix": "a"}', headers=dict(request.headers.items())
    )
    assert json_error(tampered)[0:2] == (403, "SignatureDoesNotMatch")
    form = send(signed(gw, user.access_key_id, "y" * 40, body=FORM_BODY, headers=FORM_HEADERS))
    assert xml_code(form) == (403, "SignatureDoesNotMatch")
    client = sqs_client(gw, user, "query", secret="z" * 40)
    with pytest.raises(ClientError) as excinfo:
        client.list_queues()
    assert excinfo.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_unknown_key(gw: Gateway, user: AwsUser) -> None:
    for key in ("FGAK0123456789ABCDEF", "AKIAIOSFODNN7EXAMPLE"):
        response = send(signed(gw, key, user.secret_access_key))
        assert json_error(response) == (403, "InvalidClientTokenId", "InvalidClientTokenId")
    client = sqs_client(gw, user, access_key_id="FGAK0123456789ABCDEF")
    with pytest.raises(ClientError) as excinfo:
        client.list_queues()
    assert excinfo.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_request_signed_more_than_15_minutes_away(gw: Gateway, user: AwsUser, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    for skew in (-16, 16):
        request = signed(
            gw,
            user.access_key_id,
            user.secret_access_key,
            when=now + datetime.timedelta(minutes=skew),
            monkeypatch=monkeypatch,
        )
        assert json_error(send(request)) == (400, "RequestExpired", "RequestExpired")
    request = signed(
        gw,
        user.access_key_id,
        user.secret_access_key,
        when=now - datetime.timedelta(minutes=14),
        monkeypatch=monkeypatch,
    )
    assert send(request).status_code == 200


def test_revoked_key(gw: Gateway) -> None:
    user = aws_user(gw)
    client = sqs_client(gw, user)
    client.list_queues()
    response = gw.admin("DELETE", f"/api/v1/admin/users/{user.user_id}/keys/{user.key_id}")
    assert response.status_code == 204
    with pytest.raises(ClientError) as excinfo:
        client.list_queues()
    assert excinfo.value.response["Error"]["Code"] == "InvalidClientTokenId"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_keys_list_their_access_key_id_but_never_the_secret(gw: Gateway, user: AwsUser) -> None:
    keys = gw.admin("GET", f"/api/v1/admin/users/{user.user_id}/keys").json()["keys"]
    assert [k["access_key_id"] for k in keys] == [user.access_key_id]
    assert user.secret_access_key not in orjson.dumps(keys).decode()


def test_the_region_names_the_app(gw: Gateway, user: AwsUser) -> None:
    shop = sqs_client(gw, user, region="shop")
    shop.create_queue(QueueName="orders")
    other = sqs_client(gw, user, region="default")
    with pytest.raises(other.exceptions.QueueDoesNotExist):
        other.get_queue_url(QueueName="orders")
    token = gw.token(user.api_key, app="shop")
    listed = httpx.get(gw.base_url + "/api/v1/queues", headers={"Authorization": f"Bearer {token}"}).json()
    assert [q["name"] for q in listed["queues"]] == ["orders"]
    bad = sqs_client(gw, user, region="Upper-Case")
    with pytest.raises(ClientError) as excinfo:
        bad.list_queues()
    assert excinfo.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_throttling_is_retried_by_the_sdk(gw: Gateway) -> None:
    user = aws_user(gw, plan="slow")  # 5 sends at once, then one per 20 s
    client: Any = sqs_client(gw, user, retries=1)
    url = client.create_queue(QueueName="busy")["QueueUrl"]
    answer = client.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(6)])
    assert len(answer["Successful"]) == 5
    assert [(f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [("RequestThrottled", True)]
    with pytest.raises(ClientError) as excinfo:
        client.send_message(QueueUrl=url, MessageBody="y")
    response = excinfo.value.response
    assert response["Error"]["Code"] == "RequestThrottled"
    assert isinstance(excinfo.value, client.exceptions.RequestThrottled)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1  # botocore's standard mode retried it as throttling


def test_quota_is_over_limit_and_not_retried(gw: Gateway) -> None:
    user = aws_user(gw, plan="tiny")  # 20 units a month
    client: Any = sqs_client(gw, user, retries=3)
    url = client.create_queue(QueueName="metered")["QueueUrl"]
    for _ in range(2):
        answer = client.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(10)]
        )
        assert len(answer["Successful"]) == 10
    with pytest.raises(ClientError) as excinfo:
        client.send_message(QueueUrl=url, MessageBody="one too many")
    response = excinfo.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("OverLimit", 403)
    assert isinstance(excinfo.value, client.exceptions.OverLimit)
    assert response["ResponseMetadata"]["RetryAttempts"] == 0


def test_query_requests_posted_to_the_queue_url(gw: Gateway, user: AwsUser) -> None:
    """Older SDKs post to the queue URL itself and leave QueueUrl out of the form."""
    client = sqs_client(gw, user)
    client.create_queue(QueueName="by-path")
    path = f"/{user.user_id}/by-path"
    body = b"Action=SendMessage&Version=2012-11-05&MessageBody=via%20path"
    sent = send(signed(gw, user.access_key_id, user.secret_access_key, body=body, headers=FORM_HEADERS, path=path))
    assert sent.status_code == 200 and "<SendMessageResult>" in sent.text, sent.text
    received = client.receive_message(QueueUrl=gw.base_url + path, WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in received] == ["via path"]
    other = send(
        signed(gw, user.access_key_id, user.secret_access_key, body=body, headers=FORM_HEADERS, path="/someone/by-path")
    )
    assert xml_code(other) == (400, "AWS.SimpleQueueService.NonExistentQueue")


async def test_keys_made_before_sqs_keep_working_without_a_pair(gw: Gateway, nats_server: NatsServer) -> None:
    """A key record without the AWS pair (as stored before SQS support): REST tokens yes, SigV4 no."""
    user = aws_user(gw)
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("fg_keys")
        entry = await kv.get(f"id.{user.key_id}")
        assert entry.value is not None
        record = orjson.loads(entry.value)
        del record["sealed_aws_secret"]
        await kv.put(f"id.{user.key_id}", orjson.dumps(record))
    finally:
        await nc.close()
    assert gw.token(user.api_key, app="default")
    keys = gw.admin("GET", f"/api/v1/admin/users/{user.user_id}/keys").json()["keys"]
    assert "access_key_id" not in keys[0]
    response = send(signed(gw, user.access_key_id, user.secret_access_key))
    assert json_error(response) == (403, "InvalidClientTokenId", "InvalidClientTokenId")
