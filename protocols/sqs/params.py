"""One SQS call as the actions see it, and reading its parameters with AWS's errors.

Parameters arrive in the JSON protocol's shapes (the Query codec converts its
form), but scalars may be strings (Query) or numbers (JSON): ``integer``
accepts both. A queue is named by ``QueueUrl`` (``<scheme>://<host>/<account>/<queue>``,
where the account is the user id; the host is not checked) or, for older
clients that post to the queue URL itself, by the request's path.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from auth.tokens import Claims
from protocols.sqs.errors import batch_error, invalid_parameter, missing_parameter, queue_does_not_exist

_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")


@dataclass(frozen=True, slots=True)
class Call:
    claims: Claims
    params: dict[str, Any]
    base_url: str  # scheme://host as the client addressed us
    path_queue: tuple[str, str] | None  # (account, queue) when posted to a queue URL
    disconnected: Callable[[], Awaitable[bool]]

    def queue_url(self, name: str) -> str:
        return f"{self.base_url}/{self.claims.user_id}/{name}"

    def string(self, name: str, *, required: bool = True) -> str | None:
        return string(self.params, name, required=required)

    def required(self, name: str) -> str:
        """A string parameter the action cannot do without (``MissingParameter``)."""
        return required(self.params, name)

    def integer(self, name: str, lo: int, hi: int) -> int | None:
        return integer(self.params, name, lo, hi)

    def queue(self) -> str:
        """The short name of the queue the call is about."""
        url = self.params.get("QueueUrl")
        if url is None and self.path_queue is not None:
            account, name = self.path_queue
        else:
            if not isinstance(url, str) or not url:
                raise missing_parameter("QueueUrl")
            segments = [unquote(s) for s in urlsplit(url).path.split("/") if s]
            if len(segments) != 2:
                raise queue_does_not_exist(f"The specified queue does not exist: {url[:200]}")
            account, name = segments
        if account != self.claims.user_id:
            raise queue_does_not_exist("The specified queue does not exist for this wsdl version.")
        return name


def string(params: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing_parameter(name)
        return None
    if not isinstance(value, str):
        raise invalid_parameter(f"Value for parameter {name} is invalid. Reason: must be a string.")
    return value


def required(params: dict[str, Any], name: str) -> str:
    value = string(params, name)
    assert value is not None  # string() raised MissingParameter
    return value


def integer(params: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"-?\d{1,12}", text) or not lo <= int(text) <= hi:
        raise invalid_parameter(
            f"Value {str(value)[:40]} for parameter {name} is invalid. Reason: Must be between {lo} and {hi}, if provided."
        )
    return int(text)


def string_list(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_parameter(f"Value for parameter {name} is invalid. Reason: must be a list of strings.")
    return value


def entries(params: dict[str, Any], *, max_entries: int = 10) -> list[dict[str, Any]]:
    """Batch ``Entries`` checked as SQS does: 1-10 of them, valid and distinct ids."""
    value = params.get("Entries")
    if value is None or value == [] or value == "":  # the Query protocol sends an empty list as ""
        raise batch_error(
            "EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the request."
        )
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise invalid_parameter("Entries must be a list of entries")
    if len(value) > max_entries:
        raise batch_error(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {max_entries}. You have sent {len(value)}.",
        )
    ids = [e.get("Id") for e in value]
    for entry_id in ids:
        if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
            raise batch_error(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long.",
            )
    if len(set(ids)) != len(ids):
        raise batch_error("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
    return value


def encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def decode_token(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise invalid_parameter("Invalid NextToken value.") from None
