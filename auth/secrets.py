"""The server secret and the admin key, and what is derived from the secret.

One secret (``FLOWGATE_SECRET_KEY`` or ``<data dir>/secret.key``) yields, by
HKDF, the HS256 token key, the AES-GCM key that encrypts stored API keys, and a
MAC key for opaque handles. Replicas that share the secret agree on all three.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.settings import Settings


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"flowgate", info=purpose).derive(secret)


def _read_or_create(path: Path, make: str) -> tuple[str, bool]:
    """The content of ``path``, creating it (mode 0600) with ``make`` if absent; and whether it was created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make, True


class DecryptionError(ValueError):
    """Stored ciphertext does not decrypt under this server's secret."""


@dataclass(frozen=True)
class ServerSecrets:
    token_key: bytes
    storage_key: bytes
    handle_key: bytes
    admin_key: str
    admin_key_generated: bool = False

    @classmethod
    def load(cls, settings: Settings) -> ServerSecrets:
        if settings.secret_key:
            secret = settings.secret_key
        else:
            secret, _ = _read_or_create(settings.data_dir / "secret.key", secrets.token_urlsafe(48))
        generated = False
        if settings.admin_key:
            admin_key = settings.admin_key
        else:
            admin_key, generated = _read_or_create(settings.data_dir / "admin.key", "fga_" + secrets.token_urlsafe(32))
        raw = secret.encode()
        return cls(
            token_key=_derive(raw, b"token-hs256"),
            storage_key=_derive(raw, b"api-key-storage"),
            handle_key=_derive(raw, b"opaque-handles"),
            admin_key=admin_key,
            admin_key_generated=generated,
        )

    def is_admin_key(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.admin_key.encode())

    def encrypt(self, plaintext: bytes, context: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self.storage_key).encrypt(nonce, plaintext, context)).decode()

    def decrypt(self, sealed: str, context: bytes) -> bytes:
        blob = base64.b64decode(sealed)
        try:
            return AESGCM(self.storage_key).decrypt(blob[:12], blob[12:], context)
        except InvalidTag:
            raise DecryptionError("stored secret does not decrypt: was FLOWGATE_SECRET_KEY changed?") from None

    def mac(self, data: bytes) -> bytes:
        """A MAC over ``data`` for handles that must be opaque and unforgeable."""
        return hmac.new(self.handle_key, data, hashlib.sha256).digest()
