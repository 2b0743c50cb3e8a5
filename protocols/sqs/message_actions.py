"""SQS actions on messages: send (one or a batch), receive, delete, change visibility.

Bodies are text (SQS allows XML's characters only); attributes are validated
and digested as SQS does (``message_attributes``). Batch requests are checked as
a whole first (1-10 entries, valid distinct ids, total size), then each entry
succeeds or fails on its own with SQS's code. A stale receipt handle makes
DeleteMessage succeed without deleting (as SQS documents); the latest one deletes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any

from gateway.errors import FlowGateError
from gateway.payload import Kind, Payload
from gateway.queues import QueueEngine, ReceivedMessage, SendEntry, Sent
from gateway.queues.attributes import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT, MAX_WAIT_SECONDS
from gateway.queues.errors import StaleReceiptHandle
from protocols.sqs import message_attributes as attrs
from protocols.sqs.errors import AwsError, batch_error, invalid_parameter, missing_parameter, to_aws
from protocols.sqs.params import Call, entries, integer, required, string, string_list

Result = dict[str, Any] | None
SYSTEM_NAMES = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "MessageGroupId",
    "MessageDeduplicationId",
    "SequenceNumber",
)
_FIFO_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")
_TRACE_OK = str.maketrans("", "", "\r\n\x00")


def _entry(params: dict[str, Any]) -> tuple[SendEntry, dict[str, Any]]:
    """A send's engine entry and the digests SQS answers with."""
    body = required(params, "MessageBody")
    if body == "":
        raise missing_parameter("MessageBody")
    attrs.check_text(body, "the message body")
    delay = integer(params, "DelaySeconds", 0, MAX_DELAY_SECONDS)
    user = attrs.parse_attributes(params.get("MessageAttributes"))
    system = attrs.parse_attributes(params.get("MessageSystemAttributes"), system=True)
    values, types = attrs.to_engine(user)
    trace = system.get("AWSTraceHeader")
    trace_text = None if trace is None else str(trace.value)
    if trace_text is not None and trace_text.translate(_TRACE_OK) != trace_text:
        raise invalid_parameter("AWSTraceHeader must not contain line breaks")
    digests: dict[str, Any] = {"MD5OfMessageBody": hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()}
    if user:
        digests["MD5OfMessageAttributes"] = attrs.md5_of_attributes(user)
    if system:
        digests["MD5OfMessageSystemAttributes"] = attrs.md5_of_attributes(system)
    group = _fifo_id(params, "MessageGroupId")
    dedup = _fifo_id(params, "MessageDeduplicationId")
    entry = SendEntry(Payload(body.encode("utf-8"), Kind.TEXT), delay, values, types, trace_text, group, dedup)
    return entry, digests


def _fifo_id(params: dict[str, Any], name: str) -> str | None:
    value = string(params, name, required=False)
    if value is not None and not _FIFO_ID.fullmatch(value):
        raise invalid_parameter(
            f"Value {value[:128]} for parameter {name} is invalid. "
            "Reason: it must be 1-128 alphanumeric or punctuation characters."
        )
    return value


def _sent(sent: Sent, digests: dict[str, Any]) -> dict[str, Any]:
    view = {"MessageId": sent.message_id, **digests}
    if sent.sequence_number is not None:
        view["SequenceNumber"] = sent.sequence_number
    return view


async def send_message(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    entry, digests = _entry(call.params)
    [result] = await engine.send_messages(call.claims, name, [entry], protocol="sqs", create=False)
    if isinstance(result, FlowGateError):
        raise result
    return _sent(result, digests)


def _failure(entry_id: str, error: FlowGateError) -> dict[str, Any]:
    aws = to_aws(error)
    return {"Id": entry_id, "SenderFault": aws.sender, "Code": aws.aws_code, "Message": aws.message}


async def send_message_batch(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    batch = entries(call.params)
    parsed: list[tuple[SendEntry, dict[str, Any]] | FlowGateError] = []
    for item in batch:
        try:
            parsed.append(_entry(item))
        except FlowGateError as exc:
            parsed.append(exc)
    total = sum(p[0].size for p in parsed if not isinstance(p, FlowGateError))
    limit = (await engine.queue(call.claims, name)).attributes.max_message_bytes if total > 262_144 else 262_144
    if total > max(limit, 262_144):
        raise batch_error(
            "BatchRequestTooLong",
            f"Batch requests cannot be longer than {max(limit, 262_144)} bytes. You have sent {total} bytes.",
        )
    valid = [p[0] for p in parsed if not isinstance(p, FlowGateError)]
    results = iter(await engine.send_messages(call.claims, name, valid, protocol="sqs", create=False) if valid else [])
    successful: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item, outcome in zip(batch, parsed, strict=True):
        sent = outcome if isinstance(outcome, FlowGateError) else next(results)
        if isinstance(sent, FlowGateError):
            failed.append(_failure(item["Id"], sent))
        else:
            assert not isinstance(outcome, FlowGateError)
            successful.append({"Id": item["Id"], **_sent(sent, outcome[1])})
    return {"Successful": successful, "Failed": failed}


def _system_attributes(message: ReceivedMessage, names: list[str], now_ms: int) -> dict[str, str]:
    wanted = set(SYSTEM_NAMES) if "All" in names else set(names)
    values = {
        "SenderId": message.sender_id or "",
        "SentTimestamp": str(message.sent_at_ms),
        "ApproximateReceiveCount": str(message.receive_count),
        "ApproximateFirstReceiveTimestamp": str(now_ms if message.receive_count == 1 else message.sent_at_ms),
    }
    if message.trace_header:
        values["AWSTraceHeader"] = message.trace_header
    if message.group_id is not None:
        values["MessageGroupId"] = message.group_id
        values["MessageDeduplicationId"] = message.deduplication_id or ""
        values["SequenceNumber"] = message.sequence_number or ""
    return {k: v for k, v in values.items() if k in wanted and v}


def _message(
    message: ReceivedMessage, system_names: list[str], attribute_names: list[str], now_ms: int
) -> dict[str, Any]:
    body = message.payload.body.decode("utf-8", errors="replace")
    view: dict[str, Any] = {
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt_handle,
        "MD5OfBody": hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest(),
        "Body": body,
    }
    system = _system_attributes(message, system_names, now_ms)
    if system:
        view["Attributes"] = system
    user = attrs.select(attrs.from_engine(message.attributes, message.attribute_types), attribute_names)
    if user:
        view["MD5OfMessageAttributes"] = attrs.md5_of_attributes(user)
        view["MessageAttributes"] = {k: v.to_json() for k, v in user.items()}
    return view


async def receive_message(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    max_messages = call.integer("MaxNumberOfMessages", 1, 10)
    wait = call.integer("WaitTimeSeconds", 0, MAX_WAIT_SECONDS)
    visibility = call.integer("VisibilityTimeout", 0, MAX_VISIBILITY_TIMEOUT)
    system_names = string_list(call.params, "AttributeNames") + string_list(call.params, "MessageSystemAttributeNames")
    attribute_names = string_list(call.params, "MessageAttributeNames")
    messages = await engine.receive(
        call.claims, name, max_messages=max_messages or 1, wait_seconds=wait, visibility_timeout=visibility
    )
    if messages and await call.disconnected():
        await engine.release(call.claims, name, messages)  # nobody is there to get them
        return {}
    now_ms = int(time.time() * 1000)
    if not messages:
        return {}
    return {"Messages": [_message(m, system_names, attribute_names, now_ms) for m in messages]}


async def _delete(engine: QueueEngine, call: Call, name: str, handles: list[str]) -> list[FlowGateError | None]:
    results = await engine.delete_messages(call.claims, name, handles)
    return [None if isinstance(r, StaleReceiptHandle) else r for r in results]


async def delete_message(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    handle = call.required("ReceiptHandle")
    [error] = await _delete(engine, call, name, [handle])
    if error is not None:
        raise error
    return None


async def delete_message_batch(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    batch = entries(call.params)
    handles = [e.get("ReceiptHandle") for e in batch]
    good = [h for h in handles if isinstance(h, str) and h]
    results = iter(await _delete(engine, call, name, good) if good else [])
    successful: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item, handle in zip(batch, handles, strict=True):
        error = next(results) if isinstance(handle, str) and handle else missing_parameter("ReceiptHandle")
        if error is None:
            successful.append({"Id": item["Id"]})
        else:
            failed.append(_failure(item["Id"], error))
    return {"Successful": successful, "Failed": failed}


async def _change_one(engine: QueueEngine, call: Call, name: str, params: dict[str, Any]) -> None:
    handle = required(params, "ReceiptHandle")
    timeout = integer(params, "VisibilityTimeout", 0, MAX_VISIBILITY_TIMEOUT)
    if timeout is None:
        raise missing_parameter("VisibilityTimeout")
    try:
        await engine.change_visibility(call.claims, name, handle, timeout)
    except StaleReceiptHandle:
        raise AwsError(
            "AWS.SimpleQueueService.MessageNotInflight",
            "The message referred to isn't in flight.",
            shape="MessageNotInflight",
        ) from None


async def change_message_visibility(engine: QueueEngine, call: Call) -> Result:
    await _change_one(engine, call, call.queue(), call.params)
    return None


async def change_message_visibility_batch(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    batch = entries(call.params)
    outcomes = await asyncio.gather(*(_change_one(engine, call, name, e) for e in batch), return_exceptions=True)
    successful: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item, outcome in zip(batch, outcomes, strict=True):
        if outcome is None:
            successful.append({"Id": item["Id"]})
        elif isinstance(outcome, FlowGateError):
            failed.append(_failure(item["Id"], outcome))
        else:
            raise outcome
    return {"Successful": successful, "Failed": failed}
