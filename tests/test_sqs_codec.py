"""The SQS codecs without a server: SigV4 checks against botocore's signer, the Query form and XML
against botocore's serializer and parsers (the legacy Query model), attribute digests against
published values.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any
from urllib.parse import urlencode

import botocore.auth
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sqs import sigv4, wire
from protocols.sqs.errors import AwsError, queue_does_not_exist
from protocols.sqs.message_attributes import Attribute, md5_of_attributes, parse_attributes, select
from tests.sqs_clients import _query_data_path

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = datetime.datetime.now(datetime.UTC)


def query_model() -> Any:
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(_query_data_path()))
    model = session.get_service_model("sqs")
    assert model.protocol == "query"
    return model


def json_model() -> Any:
    model = botocore.session.get_session().get_service_model("sqs")
    assert model.protocol == "json"
    return model


# -- SigV4 ------------------------------------------------------------------------------------------


def botocore_signed(url: str, body: bytes, headers: dict[str, str], region: str = "default") -> AWSRequest:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    botocore.auth.SigV4Auth(Credentials("FGAK0011223344556677", SECRET), "sqs", region).add_auth(request)
    return request


def check(request: AWSRequest, secret: str = SECRET, *, body: bytes | None = None) -> sigv4.Signed:
    from urllib.parse import urlsplit

    parts = urlsplit(request.url)
    headers = [(k.lower(), v) for k, v in request.headers.items()]
    headers.append(("host", parts.netloc))
    header_map = dict(headers)
    signed = sigv4.parse(header_map)
    sigv4.check_time(signed, NOW)
    sigv4.verify(
        secret,
        signed,
        method="POST",
        raw_path=parts.path or "/",
        raw_query=parts.query,
        headers=headers,
        header_map=header_map,
        body=request.body if body is None else body,
    )
    return signed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://localhost:8080/123456789012/my-queue",
        "http://h/acc/q?Action=ListQueues&b=x%20y&a=",
        "https://sqs.example.com/a/q_1.fifo",
    ],
)
def test_botocore_signatures_verify(url: str) -> None:
    body = b"Action=SendMessage&MessageBody=hello%20%26%20more"
    request = botocore_signed(url, body, {"Content-Type": "application/x-www-form-urlencoded", "X-Custom": "  a   b  "})
    signed = check(request)
    assert (signed.access_key_id, signed.region, signed.service) == ("FGAK0011223344556677", "default", "sqs")
    with pytest.raises(AwsError) as wrong:
        check(request, secret="another secret")
    assert wrong.value.aws_code == "SignatureDoesNotMatch" and wrong.value.aws_status == 403
    with pytest.raises(AwsError) as tampered:
        check(request, body=body + b"x")
    assert tampered.value.aws_code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "MissingAuthenticationToken"),
        ("AWS AKID:signature", "IncompleteSignature"),
        ("AWS4-HMAC-SHA256 Credential=a/20240101/r/sqs/aws4_request, SignedHeaders=host", "IncompleteSignature"),
        (
            "AWS4-HMAC-SHA256 Credential=a/20240101/sqs/aws4_request, SignedHeaders=host, Signature=ab",
            "IncompleteSignature",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=a/20240101/r/s3/aws4_request, SignedHeaders=host, Signature=ab",
            "SignatureDoesNotMatch",
        ),
    ],
)
def test_malformed_authorization(authorization: str | None, code: str) -> None:
    headers = {"host": "h", "x-amz-date": "20240101T000000Z"}
    if authorization is not None:
        headers["authorization"] = authorization
    with pytest.raises(AwsError) as excinfo:
        sigv4.parse(headers)
    assert excinfo.value.aws_code == code


def test_fifteen_minutes_of_skew() -> None:
    request = botocore_signed("http://h/", b"{}", {})
    signed = check(request)
    sigv4.check_time(signed, signed.request_time + datetime.timedelta(minutes=15))
    for minutes in (-16, 16):
        with pytest.raises(AwsError) as excinfo:
            sigv4.check_time(signed, signed.request_time + datetime.timedelta(minutes=minutes))
        assert (excinfo.value.aws_code, excinfo.value.aws_status) == ("RequestExpired", 400)


# -- message attributes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "digest"),
    [  # values published with AWS's algorithm (SQS developer guide example and SDK tests)
        ({"SellerName": ("String", "Example Store")}, "cd28f3b68aeee4b2eac9c66f2f694b58"),
        ({"ordinal": ("Number", "1"), "category": ("String", "test")}, "d21ae90c49061e927f57df5f5d72be1f"),
        ({"timestamp": ("Number", "1493147359900")}, "235c5c510d26fb653d073faed50ae77c"),
    ],
)
def test_md5_of_message_attributes(attributes: dict[str, tuple[str, str]], digest: str) -> None:
    assert md5_of_attributes({k: Attribute(t, v) for k, (t, v) in attributes.items()}) == digest


def test_binary_attributes_use_their_own_transport_byte() -> None:
    text = md5_of_attributes({"a": Attribute("Binary", "AAE=")})  # never stored like this: shows the difference
    binary = md5_of_attributes(parse_attributes({"a": {"DataType": "Binary", "BinaryValue": "AAE="}}))
    assert text != binary


def test_attribute_selection() -> None:
    attributes = {n: Attribute("String", "v") for n in ("a.x", "a.y", "b", "ab")}
    assert set(select(attributes, ["All"])) == set(attributes)
    assert set(select(attributes, [".*"])) == set(attributes)
    assert set(select(attributes, ["a.*"])) == {"a.x", "a.y"}
    assert set(select(attributes, ["b", "zzz"])) == {"b"}
    assert select(attributes, []) == {}


# -- the Query protocol: botocore's form in, botocore's XML parser on what we render -------------------------


def on_the_wire(params: dict[str, Any], action: str) -> dict[str, Any]:
    """What the gateway makes of the form botocore's Query serializer sends for ``params``."""
    form = create_serializer("query").serialize_to_request(params, query_model().operation_model(action))["body"]
    request = wire.parse({"content-type": "application/x-www-form-urlencoded"}, "", urlencode(form).encode())
    assert (request.protocol, request.action) == ("query", action)
    return request.params


def test_query_forms_become_json_shapes() -> None:
    params = {
        "QueueUrl": "http://h/a/q",
        "Entries": [
            {
                "Id": "one",
                "MessageBody": "hi",
                "DelaySeconds": 3,
                "MessageAttributes": {
                    "s": {"DataType": "String", "StringValue": "v"},
                    "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
                },
            },
            {"Id": "two", "MessageBody": "there"},
        ],
    }
    shaped = on_the_wire(params, "SendMessageBatch")
    assert shaped == {
        "QueueUrl": "http://h/a/q",
        "Entries": [
            {
                "Id": "one",
                "MessageBody": "hi",
                "DelaySeconds": "3",
                "MessageAttributes": {
                    "s": {"DataType": "String", "StringValue": "v"},
                    "b": {"DataType": "Binary", "BinaryValue": "AAE="},
                },
            },
            {"Id": "two", "MessageBody": "there"},
        ],
    }
    create = on_the_wire({"QueueName": "q", "Attributes": {"DelaySeconds": "1"}, "tags": {"k": "v"}}, "CreateQueue")
    assert create == {"QueueName": "q", "Attributes": {"DelaySeconds": "1"}, "tags": {"k": "v"}}
    receive = on_the_wire(
        {"QueueUrl": "u", "AttributeNames": ["All"], "MessageAttributeNames": ["a.*", "b"]}, "ReceiveMessage"
    )
    assert receive == {"QueueUrl": "u", "AttributeNames": ["All"], "MessageAttributeNames": ["a.*", "b"]}


RESULTS: list[tuple[str, dict[str, Any]]] = [
    (
        "ReceiveMessage",
        {
            "Messages": [
                {
                    "MessageId": "m1",
                    "ReceiptHandle": "h1",
                    "MD5OfBody": "d1",
                    "Body": "<b>&amp;\r\n",
                    "Attributes": {"SentTimestamp": "1", "ApproximateReceiveCount": "2"},
                    "MD5OfMessageAttributes": "d2",
                    "MessageAttributes": {
                        "s": {"StringValue": "v", "DataType": "String"},
                        "b": {"BinaryValue": b"\x00\xff", "DataType": "Binary"},
                    },
                },
                {"MessageId": "m2", "ReceiptHandle": "h2", "MD5OfBody": "d3", "Body": "x"},
            ]
        },
    ),
    (
        "SendMessageBatch",
        {
            "Successful": [{"Id": "a", "MessageId": "m", "MD5OfMessageBody": "d"}],
            "Failed": [{"Id": "b", "SenderFault": True, "Code": "InvalidParameterValue", "Message": "no"}],
        },
    ),
    ("GetQueueAttributes", {"Attributes": {"VisibilityTimeout": "30", "QueueArn": "arn:aws:sqs:r:a:q"}}),
    ("ListQueues", {"QueueUrls": ["http://h/a/q1", "http://h/a/q2"]}),
    ("ListQueueTags", {"Tags": {"env": "prod", "team": "x"}}),
    ("ListDeadLetterSourceQueues", {"queueUrls": ["http://h/a/q1"]}),
    ("DeleteMessageBatch", {"Successful": [{"Id": "a"}], "Failed": []}),
    ("CreateQueue", {"QueueUrl": "http://h/a/q"}),
]


@pytest.mark.parametrize(("action", "result"), RESULTS)
def test_xml_results_parse_as_botocore_expects(action: str, result: dict[str, Any]) -> None:
    rendered = wire.render("query", action, result, "req-1")
    operation = query_model().operation_model(action)
    response = {"status_code": 200, "headers": rendered.headers, "body": rendered.body}
    parsed = create_parser("query").parse(response, operation.output_shape)
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"
    parsed.pop("ResponseMetadata")
    expected = {k: v for k, v in result.items() if v != []}
    assert parsed == expected


def as_json_text(value: Any) -> Any:
    """Binary values as the JSON protocol carries them: base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: as_json_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_text(v) for v in value]
    return value


@pytest.mark.parametrize(("action", "result"), RESULTS)
def test_json_results_parse_as_botocore_expects(action: str, result: dict[str, Any]) -> None:
    rendered = wire.render("json", action, as_json_text(result), "req-2")
    operation = json_model().operation_model(action)
    response = {"status_code": 200, "headers": rendered.headers, "body": rendered.body}
    parsed = create_parser("json").parse(response, operation.output_shape)
    parsed.pop("ResponseMetadata")
    assert parsed == result


def test_errors_parse_to_the_legacy_codes_in_both_protocols() -> None:
    error = queue_does_not_exist()
    json_rendered = wire.render_error("json", error, "r")
    parsed = create_parser("json").parse(
        {"status_code": json_rendered.status, "headers": json_rendered.headers, "body": json_rendered.body}, None
    )
    assert parsed["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert parsed["Error"]["QueryErrorCode"] == "QueueDoesNotExist"  # botocore's key to the exception class
    xml = wire.render_error("query", error, "r")
    parsed = create_parser("query").parse({"status_code": xml.status, "headers": xml.headers, "body": xml.body}, None)
    assert (parsed["Error"]["Code"], parsed["Error"]["Type"]) == ("AWS.SimpleQueueService.NonExistentQueue", "Sender")
    assert xml.status == 400


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        ({"x-amz-target": "AmazonSQS."}, b"{}", "UnknownOperationException"),
        ({"x-amz-target": "AmazonSQS.ListQueues"}, b"[1]", "SerializationException"),
        ({"x-amz-target": "AmazonSQS.ListQueues"}, b"{not json", "SerializationException"),
        ({"content-type": "application/x-www-form-urlencoded"}, b"Version=2012-11-05", "MissingAction"),
        ({}, b"Action=SendMessage&Attribute.1.Name=a&Attribute.x.Name=b", "MalformedQueryString"),
    ],
)
def test_malformed_requests(headers: dict[str, str], body: bytes, code: str) -> None:
    with pytest.raises(AwsError) as excinfo:
        wire.parse(headers, "", body)
    assert excinfo.value.aws_code == code


# -- whatever arrives, the codecs answer in AWS's terms ----------------------------------------------------

_FORM_KEYS = st.sampled_from(
    ["Action", "QueueUrl", "Attribute.1.Name", "Attribute.1.Value", "Attribute.x.Name", "MessageAttribute.1.Value.DataType",
     "SendMessageBatchRequestEntry.1.Id", "SendMessageBatchRequestEntry", "Tag.2.Key", "AttributeName.1", "A..B", ""]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_FORM_KEYS, st.text(max_size=12)), max_size=8), st.binary(max_size=40))
def test_any_form_or_body_parses_or_gets_an_aws_error(pairs: list[tuple[str, str]], junk: bytes) -> None:
    for headers, body in (
        ({"content-type": "application/x-www-form-urlencoded"}, urlencode(pairs).encode()),
        ({"x-amz-target": "AmazonSQS.SendMessage"}, junk),
        ({}, junk),
    ):
        try:
            request = wire.parse(headers, "", body)
        except AwsError as exc:
            assert exc.aws_status == 400
        else:
            assert isinstance(request.params, dict)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=20))
def test_any_authorization_header_parses_or_gets_an_aws_error(authorization: str, date: str) -> None:
    try:
        sigv4.parse({"authorization": "AWS4-HMAC-SHA256 " + authorization, "x-amz-date": date, "host": "h"})
    except AwsError as exc:
        assert exc.aws_code in {"IncompleteSignature", "SignatureDoesNotMatch", "MissingAuthenticationToken"}
