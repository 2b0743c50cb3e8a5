"""The two SQS wire protocols, sans-I/O: a request's bytes to (action, parameters), results to bytes.

- **JSON 1.0** (current SDKs): ``X-Amz-Target: AmazonSQS.<Action>``, a JSON
  object body; answers ``application/x-amz-json-1.0``; errors are
  ``{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}`` with the
  ``x-amzn-query-error: <Code>;Sender`` header botocore uses to map the shape
  back to the legacy code (``AWS.SimpleQueueService.NonExistentQueue`` etc.).
- **Query** (older SDKs, the AWS CLI v1/v2 of Debian 12): a form with
  ``Action=<Action>``; flattened names (``Attribute.1.Name``,
  ``MessageAttribute.1.Value.StringValue``, ``SendMessageBatchRequestEntry.1.Id``)
  are turned into the JSON protocol's shapes, so the actions see one form;
  answers are XML in the 2012-11-05 namespace, errors ``<ErrorResponse>``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson

from protocols.sqs.errors import AwsError

Protocol = Literal["json", "query"]
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
XML_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
TARGET_PREFIX = "AmazonSQS."


@dataclass(frozen=True, slots=True)
class SqsRequest:
    protocol: Protocol
    action: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]


def protocol_of(headers: Mapping[str, str]) -> Protocol:
    """JSON when the request names an ``X-Amz-Target`` or the JSON content type, Query otherwise."""
    if "x-amz-target" in headers or headers.get("content-type", "").startswith("application/x-amz-json"):
        return "json"
    return "query"


def parse(headers: Mapping[str, str], raw_query: str, body: bytes) -> SqsRequest:
    """The action and its parameters (JSON shapes); AWS's error for a malformed request."""
    protocol = protocol_of(headers)
    if protocol == "json":
        target = headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX) or len(target) == len(TARGET_PREFIX):
            raise AwsError("UnknownOperationException", f"X-Amz-Target {target[:80]!r} names no SQS operation")
        try:
            params = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise AwsError("SerializationException", "The request body is not valid JSON") from None
        if not isinstance(params, dict):
            raise AwsError("SerializationException", "The request body must be a JSON object")
        return SqsRequest("json", target[len(TARGET_PREFIX) :], params)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AwsError("MalformedQueryString", "The form body is not UTF-8") from None
    pairs = parse_qsl(raw_query, keep_blank_values=True) + parse_qsl(text, keep_blank_values=True)
    flat = dict(pairs)
    action = flat.pop("Action", "")
    if not action:
        raise AwsError("MissingAction", "The request must contain the parameter Action.")
    for name in ("Version", "AWSAccessKeyId", "SignatureVersion", "SignatureMethod", "Timestamp", "Signature"):
        flat.pop(name, None)
    return SqsRequest("query", action, from_query(action, flat))


# -- Query form -> JSON shapes --------------------------------------------------------------------

# flattened list member -> (JSON name, how its items look)
_LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "TagKey": "TagKeys",
    "SendMessageBatchRequestEntry": "Entries",
    "DeleteMessageBatchRequestEntry": "Entries",
    "ChangeMessageVisibilityBatchRequestEntry": "Entries",
    "StringListValue": "StringListValues",
    "BinaryListValue": "BinaryListValues",
}
# flattened map member -> (JSON name, key field, value field)
_MAPS = {
    "Attribute": ("Attributes", "Name", "Value"),
    "MessageAttribute": ("MessageAttributes", "Name", "Value"),
    "MessageSystemAttribute": ("MessageSystemAttributes", "Name", "Value"),
    "Tag": ("Tags", "Key", "Value"),
}


def _tree(flat: Mapping[str, str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise AwsError("MalformedQueryString", f"parameter {key[:80]!r} conflicts with another")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise AwsError("MalformedQueryString", f"parameter {key[:80]!r} conflicts with another")
        node[parts[-1]] = value
    return root


def _numbered(node: Any, name: str) -> list[Any]:
    if node == "":
        return []  # how an empty list is sent
    if not isinstance(node, dict) or not all(k.isdigit() for k in node):
        raise AwsError("MalformedQueryString", f"{name} must be given as {name}.1, {name}.2, ...")
    return [node[k] for k in sorted(node, key=int)]


def _shape(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _LISTS:
            items = _numbered(value, key)
            out[_LISTS[key]] = [_shape(i) if isinstance(i, dict) else i for i in items]
        elif key in _MAPS:
            name, key_field, value_field = _MAPS[key]
            mapping: dict[str, Any] = {}
            for item in _numbered(value, key):
                if not isinstance(item, dict) or key_field not in item:
                    raise AwsError("MalformedQueryString", f"each {key}.N needs {key}.N.{key_field}")
                inner = item.get(value_field)
                mapping[str(item[key_field])] = _shape(inner) if isinstance(inner, dict) else inner
            out[name] = mapping
        elif isinstance(value, dict):
            out[key] = _shape(value)
        else:
            out[key] = value
    return out


def from_query(action: str, flat: Mapping[str, str]) -> dict[str, Any]:
    """The JSON protocol's parameters for a Query form (all scalars stay strings)."""
    params = _shape(_tree(flat))
    if action == "CreateQueue" and "Tags" in params:
        params["tags"] = params.pop("Tags")  # CreateQueue's member is spelled in lower case
    return params


# -- results --------------------------------------------------------------------------------------


def render(protocol: Protocol, action: str, result: dict[str, Any] | None, request_id: str) -> Rendered:
    if protocol == "json":
        return Rendered(200, JSON_CONTENT_TYPE, orjson.dumps(result or {}), {"x-amzn-RequestId": request_id})
    inner = "" if result is None else f"<{action}Result>{_xml_members(action, result)}</{action}Result>"
    body = (
        f'<?xml version="1.0"?><{action}Response xmlns="{XML_NAMESPACE}">{inner}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
    return Rendered(200, "text/xml", body.encode("utf-8"), {"x-amzn-RequestId": request_id})


def render_error(protocol: Protocol, error: AwsError, request_id: str) -> Rendered:
    headers = {"x-amzn-RequestId": request_id, **error.headers}
    if protocol == "json":
        headers["x-amzn-query-error"] = f"{error.aws_code};{error.fault}"
        body = orjson.dumps({"__type": f"com.amazonaws.sqs#{error.shape}", "message": error.message})
        return Rendered(error.aws_status, JSON_CONTENT_TYPE, body, headers)
    xml = (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{XML_NAMESPACE}"><Error><Type>{error.fault}</Type>'
        f"<Code>{escape(error.aws_code)}</Code><Message>{escape(error.message)}</Message><Detail/></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return Rendered(error.aws_status, "text/xml", xml.encode("utf-8"), headers)


# JSON member -> the flattened XML element of each item
_XML_LISTS = {
    "Messages": "Message",
    "QueueUrls": "QueueUrl",
    "queueUrls": "QueueUrl",
    "Failed": "BatchResultErrorEntry",
    "Results": "ListMessageMoveTasksResultEntry",
}
_XML_SUCCESSFUL = {
    "SendMessageBatch": "SendMessageBatchResultEntry",
    "DeleteMessageBatch": "DeleteMessageBatchResultEntry",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibilityBatchResultEntry",
}


def _xml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return escape(str(value), {"\r": "&#xD;"})


def _xml_attribute_value(value: Mapping[str, Any]) -> str:
    parts = [f"<{k}>{_xml_value(v)}</{k}>" for k, v in value.items() if k in ("StringValue", "BinaryValue")]
    return "".join(parts) + f"<DataType>{_xml_value(value.get('DataType', 'String'))}</DataType>"


def _xml_members(action: str, document: Mapping[str, Any]) -> str:
    out: list[str] = []
    for key, value in document.items():
        if value is None:
            continue
        if key in ("Attributes",) and isinstance(value, dict):
            out.extend(
                f"<Attribute><Name>{_xml_value(k)}</Name><Value>{_xml_value(v)}</Value></Attribute>"
                for k, v in value.items()
            )
        elif key == "MessageAttributes" and isinstance(value, dict):
            out.extend(
                f"<MessageAttribute><Name>{_xml_value(k)}</Name><Value>{_xml_attribute_value(v)}</Value></MessageAttribute>"
                for k, v in value.items()
            )
        elif key == "Tags" and isinstance(value, dict):
            out.extend(f"<Tag><Key>{_xml_value(k)}</Key><Value>{_xml_value(v)}</Value></Tag>" for k, v in value.items())
        elif isinstance(value, list):
            element = _XML_SUCCESSFUL.get(action, key) if key == "Successful" else _XML_LISTS.get(key, key)
            for item in value:
                inner = _xml_members(action, item) if isinstance(item, dict) else _xml_value(item)
                out.append(f"<{element}>{inner}</{element}>")
        elif isinstance(value, dict):
            out.append(f"<{key}>{_xml_members(action, value)}</{key}>")
        else:
            out.append(f"<{key}>{_xml_value(value)}</{key}>")
    return "".join(out)
