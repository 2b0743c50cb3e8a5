"""Queue attributes by their SQS names, to and from the engine's ``QueueAttributes``.

Names SQS documents that the engine acts on map to its fields
(``VisibilityTimeout`` → ``visibility_timeout``, ``RedrivePolicy`` with the
dead-letter queue's ARN → ``redrive_policy`` with its short name, ...); the
ones it keeps without acting on (``Policy``, ``RedriveAllowPolicy``, KMS and
high-throughput FIFO settings) go to ``extra``. Values travel as strings, as on
the wire. An unknown name is ``InvalidAttributeName``, a bad value
``InvalidAttributeValue``. An ARN is ``arn:aws:sqs:<app>:<user id>:<queue name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.queues import QueueInfo
from gateway.queues.attributes import (
    MAX_DELAY_SECONDS,
    MAX_RECEIVE_COUNT,
    MAX_RETENTION_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    MIN_MESSAGE_BYTES,
    MIN_RETENTION_SECONDS,
)
from gateway.queues.catalog import QueueRecord
from gateway.topics import Namespace
from protocols.sqs.errors import invalid_attribute_name, invalid_attribute_value

SQS_MAX_MESSAGE_BYTES = 1_048_576

# SQS name -> (engine field, lowest, highest)
_INTEGERS = {
    "VisibilityTimeout": ("visibility_timeout", 0, MAX_VISIBILITY_TIMEOUT),
    "MessageRetentionPeriod": ("message_retention_seconds", MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS),
    "DelaySeconds": ("delay_seconds", 0, MAX_DELAY_SECONDS),
    "ReceiveMessageWaitTimeSeconds": ("receive_wait_seconds", 0, MAX_WAIT_SECONDS),
    "MaximumMessageSize": ("max_message_bytes", MIN_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES),
}
EXTRA = ("Policy", "RedriveAllowPolicy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled")
FIFO_EXTRA = ("DeduplicationScope", "FifoThroughputLimit")
_DEFAULT_EXTRA = {"SqsManagedSseEnabled": "false"}
READ_ONLY = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
)
SETTABLE = (*_INTEGERS, "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication", *EXTRA, *FIFO_EXTRA)
ALL = (*READ_ONLY, *SETTABLE)


@dataclass(frozen=True, slots=True)
class Arn:
    region: str
    account: str
    name: str

    def __str__(self) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.name}"

    @classmethod
    def parse(cls, text: Any, what: str) -> Arn:
        parts = text.split(":") if isinstance(text, str) else []
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"] or not parts[5]:
            raise invalid_attribute_value(f"Value {str(text)[:120]!r} for {what} is not a valid SQS queue ARN.")
        return cls(parts[3], parts[4], parts[5])


def arn(namespace: Namespace, name: str) -> Arn:
    return Arn(namespace.app, namespace.user_id, name)


def _integer(name: str, value: Any) -> int:
    _, lo, hi = _INTEGERS[name]
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("-").isdigit() or not lo <= int(text) <= hi:
        raise invalid_attribute_value(f"Invalid value for the parameter {name}. Reason: must be between {lo} and {hi}.")
    return int(text)


def _boolean(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text not in ("true", "false"):
        raise invalid_attribute_value(f"Invalid value for the parameter {name}. Reason: must be true or false.")
    return text == "true"


def _redrive(value: Any, namespace: Namespace) -> dict[str, Any] | None:
    if value in ("", None):
        return None
    try:
        document = orjson.loads(value) if isinstance(value, str) else value
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or not {"deadLetterTargetArn", "maxReceiveCount"} <= set(document):
        raise invalid_attribute_value(
            "Value for parameter RedrivePolicy is invalid. Reason: Redrive policy is not a JSON object with "
            "deadLetterTargetArn and maxReceiveCount."
        )
    target = Arn.parse(document["deadLetterTargetArn"], "RedrivePolicy.deadLetterTargetArn")
    if target.account != namespace.user_id or target.region != namespace.app:
        raise invalid_attribute_value(
            "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist."
        )
    count = str(document["maxReceiveCount"])
    if not count.isdigit() or not 1 <= int(count) <= MAX_RECEIVE_COUNT:
        raise invalid_attribute_value(
            f"Value for parameter RedrivePolicy is invalid. Reason: maxReceiveCount must be between 1 and {MAX_RECEIVE_COUNT}."
        )
    return {"dead_letter_queue": target.name, "max_receive_count": int(count)}


def to_changes(
    attributes: dict[str, Any], namespace: Namespace, *, fifo: bool, creating: bool, max_message_bytes: int
) -> dict[str, Any]:
    """The engine's changes for SQS ``attributes``; ``fifo``: the queue is (or is being made) a FIFO queue."""
    if not isinstance(attributes, dict):
        raise invalid_attribute_value("Attributes must be a map of attribute name to value")
    changes: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for name, value in attributes.items():
        if name in _INTEGERS:
            number = _integer(name, value)
            if name == "MaximumMessageSize" and number > max_message_bytes:
                raise invalid_attribute_value(
                    f"Invalid value for the parameter MaximumMessageSize. Reason: this gateway's limit is {max_message_bytes}."
                )
            changes[_INTEGERS[name][0]] = number
        elif name == "RedrivePolicy":
            changes["redrive_policy"] = _redrive(value, namespace)
        elif name == "FifoQueue":
            if not creating:
                raise invalid_attribute_name("Unknown Attribute FifoQueue: it can only be set when a queue is created.")
            changes["fifo_queue"] = _boolean(name, value)
        elif name == "ContentBasedDeduplication" and fifo:
            changes["content_based_deduplication"] = _boolean(name, value)
        elif name in EXTRA or (fifo and name in FIFO_EXTRA):
            if not isinstance(value, str):
                raise invalid_attribute_value(f"Invalid value for the parameter {name}.")
            extra[name] = value
        else:
            raise invalid_attribute_name(f"Unknown Attribute {str(name)[:256]}.")
    if extra:
        changes["extra"] = extra
    return changes


def _policy_json(record: QueueRecord) -> str | None:
    policy = record.attributes.redrive_policy
    if policy is None:
        return None
    target = str(arn(record.namespace, policy.dead_letter_queue))
    return orjson.dumps({"deadLetterTargetArn": target, "maxReceiveCount": policy.max_receive_count}).decode()


def from_record(info: QueueInfo | QueueRecord, names: list[str]) -> dict[str, str]:
    """The attributes ``names`` asks for (``All`` for every one the queue has), as SQS reports them."""
    record = info.record if isinstance(info, QueueInfo) else info
    attributes = record.attributes
    values: dict[str, str | None] = {
        "QueueArn": str(arn(record.namespace, record.name)),
        "CreatedTimestamp": str(record.created_at),
        "LastModifiedTimestamp": str(record.modified_at or record.created_at),
        "VisibilityTimeout": str(attributes.visibility_timeout),
        "MessageRetentionPeriod": str(attributes.message_retention_seconds),
        "DelaySeconds": str(attributes.delay_seconds),
        "ReceiveMessageWaitTimeSeconds": str(attributes.receive_wait_seconds),
        "MaximumMessageSize": str(attributes.max_message_bytes),
        "RedrivePolicy": _policy_json(record),
        **_DEFAULT_EXTRA,
        **dict(attributes.extra),
    }
    if isinstance(info, QueueInfo):
        values["ApproximateNumberOfMessages"] = str(info.counts.visible)
        values["ApproximateNumberOfMessagesNotVisible"] = str(info.counts.in_flight)
        values["ApproximateNumberOfMessagesDelayed"] = str(info.counts.delayed)
    if attributes.fifo_queue:
        values["FifoQueue"] = "true"
        values["ContentBasedDeduplication"] = "true" if attributes.content_based_deduplication else "false"
        values.setdefault("DeduplicationScope", "queue")
        values.setdefault("FifoThroughputLimit", "perQueue")
    if "All" in names:
        return {k: v for k, v in values.items() if v is not None}
    return {n: v for n in names if (v := values.get(n)) is not None}


def check_names(names: Any) -> list[str]:
    """``AttributeNames`` of GetQueueAttributes: ``InvalidAttributeName`` for an unknown one."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise invalid_attribute_name("AttributeNames must be a list of attribute names")
    for name in names:
        if name != "All" and name not in ALL:
            raise invalid_attribute_name(f"Unknown Attribute {name[:256]}.")
    return names


def differs(record: QueueRecord, changes: dict[str, Any]) -> bool:
    """Whether an existing queue's attributes differ from what a CreateQueue asked for."""
    current = record.attributes.to_json()
    current.setdefault("fifo_queue", False)
    current.setdefault("content_based_deduplication", False)
    extra = dict(record.attributes.extra)
    for name, value in changes.items():
        if name == "extra":
            if any(extra.get(k, _DEFAULT_EXTRA.get(k)) != v for k, v in value.items()):
                return True
        elif current.get(name) != value:
            return True
    return False
