"""Receipt handles: opaque, unforgeable, scoped to one namespace and queue, valid on any replica.

A handle is ``base64url(payload || mac)``: the payload packs the queue's id and
the delivery (stream sequence, delivery sequence, delivery count, stored
timestamp); the MAC (the server secret's handle key, shared by replicas) covers
the namespace and the payload. A handle from another namespace, or with one
bit changed, fails the MAC: ``InvalidReceiptHandle``, never an action on
another message. Whether a valid handle is still current is the engine's check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from dataclasses import dataclass
from typing import Protocol

from gateway.bus.queues import DeliveryRef
from gateway.queues.errors import InvalidReceiptHandle
from gateway.topics import Namespace

_VERSION = 1
_LAYOUT = struct.Struct(">B8sQQIQ")
_MAC_BYTES = 16
_DOMAIN = b"flowgate-receipt-v1\x00"
MAX_HANDLE_CHARS = 128


class Signer(Protocol):
    """The MAC replicas share for opaque handles (``auth.secrets.ServerSecrets``)."""

    def mac(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ReceiptHandle:
    queue_id: str  # 16 hex digits
    ref: DeliveryRef

    def _payload(self) -> bytes:
        r = self.ref
        return _LAYOUT.pack(
            _VERSION, bytes.fromhex(self.queue_id), r.stream_seq, r.delivery_seq, r.delivered, r.timestamp_ns
        )

    def encode(self, signer: Signer, namespace: Namespace) -> str:
        payload = self._payload()
        mac = signer.mac(_scope(namespace) + payload)[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str, signer: Signer, namespace: Namespace) -> ReceiptHandle:
        if not isinstance(text, str) or not 0 < len(text) <= MAX_HANDLE_CHARS:
            raise InvalidReceiptHandle("receipt handle must be a non-empty string from a receive")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidReceiptHandle("receipt handle is not valid") from None
        if len(raw) != _LAYOUT.size + _MAC_BYTES:
            raise InvalidReceiptHandle("receipt handle is not valid")
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, signer.mac(_scope(namespace) + payload)[:_MAC_BYTES]):
            raise InvalidReceiptHandle("receipt handle is not valid for this namespace")
        version, queue_id, sseq, dseq, delivered, ts = _LAYOUT.unpack(payload)
        if version != _VERSION:
            raise InvalidReceiptHandle("receipt handle is not valid")
        return cls(queue_id.hex(), DeliveryRef(sseq, dseq, delivered, ts))


def _scope(namespace: Namespace) -> bytes:
    return _DOMAIN + namespace.user_id.encode() + b"\x00" + namespace.app.encode() + b"\x00"
