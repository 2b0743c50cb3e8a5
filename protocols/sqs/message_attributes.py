"""Message attributes as SQS has them: validation, their MD5 digest, and the engine's string form.

An attribute is ``{"DataType": "String|Number|Binary[.custom]", "StringValue"
| "BinaryValue": ...}``. The engine stores string values (a Binary value as its
base64 text) with each non-``String`` type on the side, so the REST API sees
plain strings and SQS gets the types back. ``md5_of_attributes`` is AWS's
digest: over the names in sorted order, each name, data type and value as a
4-byte big-endian length and the bytes, with a transport byte (1 string, 2
binary) before the value; the SDKs check it on every send and receive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.sqs.errors import AwsError, invalid_parameter

MAX_ATTRIBUTES = 10
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INVALID_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Attribute:
    data_type: str
    value: str | bytes  # bytes for Binary types

    @property
    def binary(self) -> bool:
        return self.data_type.startswith("Binary")

    @property
    def size(self) -> int:
        raw = self.value if isinstance(self.value, bytes) else self.value.encode("utf-8")
        return len(self.data_type.encode("utf-8")) + len(raw)

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.value, bytes):
            return {"DataType": self.data_type, "BinaryValue": base64.b64encode(self.value).decode("ascii")}
        return {"DataType": self.data_type, "StringValue": self.value}


def check_text(text: str, what: str) -> None:
    """``InvalidMessageContents`` for characters outside what XML allows (as SQS does)."""
    bad = _INVALID_TEXT.search(text)
    if bad is not None:
        raise AwsError("InvalidMessageContents", f"Invalid characters found in {what}: U+{ord(bad.group()):04X}")


def _binary(value: Any, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise invalid_parameter(f"Message (user) attribute '{name}' has an invalid BinaryValue.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_parameter(f"Message (user) attribute '{name}' BinaryValue is not valid base64.") from None


def parse_attributes(value: Any, *, system: bool = False) -> dict[str, Attribute]:
    """``MessageAttributes`` (or ``MessageSystemAttributes``) of a send, validated as SQS does."""
    what = "system attribute" if system else "(user) attribute"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter(f"Message {what}s must be a map of name to value")
    if len(value) > MAX_ATTRIBUTES:
        raise invalid_parameter(f"Number of message attributes [{len(value)}] exceeds the allowed maximum [10].")
    out: dict[str, Attribute] = {}
    for name, item in value.items():
        if system and name != "AWSTraceHeader":
            raise invalid_parameter(f"Message system attribute name '{name}' is invalid.")
        if not _NAME.fullmatch(name) or name.startswith(".") or name.endswith(".") or ".." in name:
            raise invalid_parameter(f"Message {what} name '{name[:256]}' is invalid.")
        if name.lower().startswith(("aws.", "amazon.")):
            raise invalid_parameter(f"Message {what} name '{name}' uses a reserved prefix (AWS. or Amazon.).")
        if not isinstance(item, dict):
            raise invalid_parameter(f"Message {what} '{name}' must be {{DataType, StringValue|BinaryValue}}.")
        data_type = item.get("DataType")
        if not isinstance(data_type, str) or not data_type:
            raise invalid_parameter(f"The message {what} '{name}' must contain a non-empty message attribute type.")
        base = data_type.split(".", 1)[0]
        if base not in ("String", "Number", "Binary") or len(data_type) > 256:
            raise invalid_parameter(
                f"The type of message {what} '{name}' is invalid. You must use only the following supported type "
                "prefixes: Binary, Number, String."
            )
        if system and data_type != "String":
            raise invalid_parameter(f"Message system attribute '{name}' must be of type String.")
        if base == "Binary":
            raw = _binary(item.get("BinaryValue"), name)
            if not raw:
                raise invalid_parameter(f"Message {what} '{name}' must contain a non-empty value of type '{base}'.")
            out[name] = Attribute(data_type, raw)
            continue
        text = item.get("StringValue")
        if not isinstance(text, str) or not text:
            raise invalid_parameter(f"Message {what} '{name}' must contain a non-empty value of type '{base}'.")
        check_text(text, f"message {what} '{name}'")
        if base == "Number" and not _NUMBER.fullmatch(text):
            raise invalid_parameter(f"Message {what} '{name}' has an invalid value for the type Number: {text[:40]!r}.")
        out[name] = Attribute(data_type, text)
    return out


def _encoded(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


def md5_of_attributes(attributes: Mapping[str, Attribute]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        attribute = attributes[name]
        digest.update(_encoded(name.encode("utf-8")))
        digest.update(_encoded(attribute.data_type.encode("utf-8")))
        if isinstance(attribute.value, bytes):
            digest.update(b"\x02" + _encoded(attribute.value))
        else:
            digest.update(b"\x01" + _encoded(attribute.value.encode("utf-8")))
    return digest.hexdigest()


def to_engine(attributes: Mapping[str, Attribute]) -> tuple[dict[str, str], dict[str, str]]:
    """(values as strings, the types that are not ``String``) as the engine stores them."""
    values: dict[str, str] = {}
    types: dict[str, str] = {}
    for name, attribute in attributes.items():
        if isinstance(attribute.value, bytes):
            values[name] = base64.b64encode(attribute.value).decode("ascii")
        else:
            values[name] = attribute.value
        if attribute.data_type != "String":
            types[name] = attribute.data_type
    return values, types


def from_engine(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Attribute]:
    """The SQS attributes of a stored message (REST-sent ones are all ``String``)."""
    out: dict[str, Attribute] = {}
    for name, value in values.items():
        data_type = types.get(name, "String")
        if data_type.startswith("Binary"):
            try:
                out[name] = Attribute(data_type, base64.b64decode(value))
            except (binascii.Error, ValueError):
                out[name] = Attribute("String", value)
        else:
            out[name] = Attribute(data_type, value)
    return out


def select(attributes: Mapping[str, Attribute], names: list[str]) -> dict[str, Attribute]:
    """The attributes ``MessageAttributeNames`` asks for: ``All``, ``.*``, ``prefix.*`` or exact names."""
    if not names:
        return {}
    if "All" in names or ".*" in names:
        return dict(attributes)
    prefixes = tuple(n[:-1] for n in names if n.endswith(".*"))
    exact = set(names)
    return {k: v for k, v in attributes.items() if k in exact or (prefixes and k.startswith(prefixes))}
