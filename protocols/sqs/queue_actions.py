"""SQS actions on queues: create, find, list, delete, attributes, purge, tags, dead-letter sources.

Each takes a ``Call`` and returns the JSON protocol's result shape (or ``None``
for an empty one); everything happens in the one ``QueueEngine`` the REST API
uses. Queue names follow SQS: 1-80 of ``[A-Za-z0-9_-]``, a FIFO queue's ending
in ``.fifo`` (and only a FIFO queue's).
"""

from __future__ import annotations

import re
import time
from typing import Any

from gateway.errors import BadRequest
from gateway.queues import QueueEngine
from gateway.queues.catalog import QueueRecord
from gateway.queues.errors import QueueNotFound
from protocols.sqs import queue_attributes
from protocols.sqs.errors import (
    AwsError,
    invalid_attribute_value,
    invalid_parameter,
    missing_parameter,
    queue_does_not_exist,
)
from protocols.sqs.params import Call, decode_token, encode_token, string_list

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo")
MAX_TAGS = 50
PURGE_INTERVAL = 60
_TAG = re.compile(r"[\w\s.:/=+\-@]{1,256}", re.UNICODE)

Result = dict[str, Any] | None


def _checked_name(name: str, fifo: bool) -> None:
    if fifo and not _FIFO_NAME.fullmatch(name):
        raise invalid_parameter(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, "
            "must end with .fifo suffix and be 1 to 80 in length."
        )
    if not fifo and not _NAME.fullmatch(name):
        raise invalid_parameter(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
            + (" (a queue named .fifo needs the attribute FifoQueue=true)" if name.endswith(".fifo") else "")
        )


def _tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid_parameter("Tags must be a map of tag key to value")
    if len(value) > MAX_TAGS:
        raise invalid_parameter(f"Too many tags: at most {MAX_TAGS}.")
    for key, item in value.items():
        if not _TAG.fullmatch(key) or (item and not _TAG.fullmatch(item)) or key.lower().startswith("aws:"):
            raise invalid_parameter(f"Tag {key[:128]!r} has an invalid key or value.")
    return dict(value)


async def _attributes_changes(engine: QueueEngine, call: Call, *, fifo: bool, creating: bool) -> dict[str, Any]:
    limit = engine.max_message_bytes
    changes = queue_attributes.to_changes(
        call.params.get("Attributes") or {},
        call.claims.namespace,
        fifo=fifo,
        creating=creating,
        max_message_bytes=limit,
    )
    policy = changes.get("redrive_policy")
    if policy is not None:
        try:
            await engine.queue(call.claims, policy["dead_letter_queue"])
        except (QueueNotFound, BadRequest):
            raise invalid_attribute_value(
                "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist."
            ) from None
    return changes


async def create_queue(engine: QueueEngine, call: Call) -> Result:
    name = call.required("QueueName")
    attributes = call.params.get("Attributes") or {}
    fifo = isinstance(attributes, dict) and str(attributes.get("FifoQueue", "false")).lower() == "true"
    _checked_name(name, fifo)
    changes = await _attributes_changes(engine, call, fifo=fifo, creating=True)
    tags = _tags(call.params.get("tags"))
    try:
        record, created = await engine.create_queue(call.claims, name, changes, tags)
    except BadRequest as exc:
        raise invalid_attribute_value(exc.message) from None
    if not created and queue_attributes.differs(record, changes):
        raise AwsError(
            "QueueAlreadyExists",
            f"A queue already exists with the same name and a different value for attribute(s): {', '.join(call.params.get('Attributes') or {})}",
            shape="QueueNameExists",
        )
    return {"QueueUrl": call.queue_url(record.name)}


async def get_queue_url(engine: QueueEngine, call: Call) -> Result:
    name = call.required("QueueName")
    owner = call.string("QueueOwnerAWSAccountId", required=False)
    if owner is not None and owner != call.claims.user_id:
        raise queue_does_not_exist()
    if not (_NAME.fullmatch(name) or _FIFO_NAME.fullmatch(name)):
        raise queue_does_not_exist()
    record = await engine.queue(call.claims, name)
    return {"QueueUrl": call.queue_url(record.name)}


def _page(call: Call, records: list[QueueRecord], key: str) -> dict[str, Any]:
    limit = call.integer("MaxResults", 1, 1000)
    after = decode_token(call.string("NextToken", required=False))
    names = sorted(r.name for r in records)
    if after is not None:
        names = [n for n in names if n > after]
    page = names[: limit or 1000]
    result: dict[str, Any] = {}
    if page:
        result[key] = [call.queue_url(n) for n in page]
    if limit is not None and len(names) > len(page):
        result["NextToken"] = encode_token(page[-1])
    return result


async def list_queues(engine: QueueEngine, call: Call) -> Result:
    prefix = call.string("QueueNamePrefix", required=False) or ""
    records = [r for r in await engine.list_queues(call.claims) if r.name.startswith(prefix)]
    return _page(call, records, "QueueUrls")


async def delete_queue(engine: QueueEngine, call: Call) -> Result:
    await engine.delete_queue(call.claims, call.queue())
    return None


async def purge_queue(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    record = await engine.queue(call.claims, name)
    if time.time() - record.purged_at < PURGE_INTERVAL:
        raise AwsError(
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            f"Only one PurgeQueue operation on {name} is allowed every {PURGE_INTERVAL} seconds.",
            status=403,
            shape="PurgeQueueInProgress",
        )
    await engine.purge(call.claims, name)
    return None


async def get_queue_attributes(engine: QueueEngine, call: Call) -> Result:
    names = queue_attributes.check_names(call.params.get("AttributeNames"))
    name = call.queue()
    counted = {
        "All",
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    }
    info = await engine.get_queue(call.claims, name) if counted & set(names) else await engine.queue(call.claims, name)
    attributes = queue_attributes.from_record(info, names)
    return {"Attributes": attributes} if attributes else {}


async def set_queue_attributes(engine: QueueEngine, call: Call) -> Result:
    name = call.queue()
    record = await engine.queue(call.claims, name)
    if "Attributes" not in call.params:
        raise missing_parameter("Attributes")
    changes = await _attributes_changes(engine, call, fifo=record.attributes.fifo_queue, creating=False)
    try:
        await engine.set_attributes(call.claims, name, changes)
    except BadRequest as exc:
        raise invalid_attribute_value(exc.message) from None
    return None


async def tag_queue(engine: QueueEngine, call: Call) -> Result:
    tags = _tags(call.params.get("Tags"))
    if not tags:
        raise missing_parameter("Tags")
    await engine.tag_queue(call.claims, call.queue(), tags)
    return None


async def untag_queue(engine: QueueEngine, call: Call) -> Result:
    keys = string_list(call.params, "TagKeys")
    if not keys:
        raise missing_parameter("TagKeys")
    await engine.tag_queue(call.claims, call.queue(), {}, keys)
    return None


async def list_queue_tags(engine: QueueEngine, call: Call) -> Result:
    record = await engine.queue(call.claims, call.queue())
    return {"Tags": dict(record.tags)} if record.tags else {}


async def list_dead_letter_source_queues(engine: QueueEngine, call: Call) -> Result:
    sources = await engine.dead_letter_sources(call.claims, call.queue())
    result = _page(call, sources, "queueUrls")
    result.setdefault("queueUrls", [])
    return result
